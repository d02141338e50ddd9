//! Script resources `Name[::a::b]`: LSB/Heartbeat scripts and systemd units.
//!
//! Layer: shell. The script is `<config-dir>/resource.d/Name`, else
//! `<init.d>/Name`; it runs as `script a b start|stop|status` (Heartbeat passes
//! the arguments before the op). `status` follows LSB: 0 running, 3 stopped,
//! anything else an error. With no script and systemd as PID 1, `Name` is a
//! unit driven by `systemctl start|stop|is-active`. With neither, start fails
//! (naming both places searched) while stop and status say `Stopped`: nothing
//! can run without a script.

use std::path::PathBuf;

use super::runner::OpRequest;
use super::{
    find_program, Accept, AgentContext, AgentError, ErrorKind, Finished, Op, Plan, ResourceState,
    Step,
};
use crate::config::{Resource, ResourceSpec};

/// Where the script for `name` is, if anywhere.
pub fn locate(name: &str, ctx: &AgentContext) -> Option<PathBuf> {
    [
        ctx.config_dir.join("resource.d").join(name),
        ctx.init_d.join(name),
    ]
    .into_iter()
    .find(|p| p.is_file())
}

/// Plans `op`.
pub(crate) fn plan(spec: &ResourceSpec, op: Op, ctx: &AgentContext) -> Plan {
    let Resource::Script { name, args } = &spec.typed else {
        unreachable!("Task::new dispatches only Script resources here");
    };
    let finish = Finished::after(op);
    let accept = if op == Op::Status {
        Accept::LsbStatus
    } else {
        Accept::Zero
    };
    if let Some(path) = locate(name, ctx) {
        let mut req = OpRequest::new(&path.to_string_lossy(), &[], ctx.timeout);
        req.args = spec
            .args
            .iter()
            .cloned()
            .chain([op.name().to_string()])
            .collect();
        return Plan::Steps {
            steps: vec![Step::new(req, accept)],
            finish,
        };
    }
    if ctx.systemd && args.is_empty() {
        let verb = if op == Op::Status {
            "is-active"
        } else {
            op.name()
        };
        let req = OpRequest::new(&find_program("systemctl"), &[verb, name], ctx.timeout);
        return Plan::Steps {
            steps: vec![Step::new(req, accept)],
            finish,
        };
    }
    if op != Op::Start {
        return Plan::Done(Ok(Finished {
            state: ResourceState::Stopped,
            ..finish
        }));
    }
    let unit = if ctx.systemd {
        " (a systemd unit takes no arguments)"
    } else {
        ""
    };
    let message = format!(
        "no script `{}` in {} or {}{unit}",
        name,
        ctx.config_dir.join("resource.d").display(),
        ctx.init_d.display()
    );
    Plan::Done(Err(AgentError::plain(
        ErrorKind::NoScript,
        spec,
        op,
        message,
    )))
}

#[cfg(test)]
mod tests {
    use super::super::runner::Runner;
    use super::super::{check_already_active, spec, Task};
    use super::*;
    use crate::time::Duration;

    /// A config dir with resource.d/web recording its arguments, and an init.d.
    struct Dirs {
        root: PathBuf,
    }

    impl Dirs {
        fn new(tag: &str) -> Dirs {
            let root =
                std::env::temp_dir().join(format!("bascule-script-{tag}-{}", std::process::id()));
            std::fs::create_dir_all(root.join("ha.d/resource.d")).unwrap();
            std::fs::create_dir_all(root.join("init.d")).unwrap();
            let state = root.join("state");
            let web = format!(
                "#!/bin/sh\necho \"$*\" >> {root}/calls\ncase \"$2\" in\n\
                 start) touch {s};; stop) rm -f {s};;\n\
                 status) [ -e {s} ] && exit 0; exit 3;;\nesac\n",
                root = root.display(),
                s = state.display()
            );
            std::fs::write(root.join("ha.d/resource.d/web"), web).unwrap();
            std::fs::write(
                root.join("init.d/broken"),
                "#!/bin/sh\necho 'cannot start' >&2\nexit 1\n",
            )
            .unwrap();
            std::process::Command::new("chmod")
                .args(["755"])
                .arg(root.join("ha.d/resource.d/web"))
                .arg(root.join("init.d/broken"))
                .status()
                .unwrap();
            Dirs { root }
        }

        fn ctx(&self, systemd: bool) -> AgentContext {
            AgentContext {
                config_dir: self.root.join("ha.d"),
                init_d: self.root.join("init.d"),
                systemd,
                sendmail: "/nonexistent".into(),
                node: "n".into(),
                timeout: Duration::from_secs(5),
                disk_cli: None,
            }
        }
    }

    impl Drop for Dirs {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }

    fn run(word: &str, op: Op, ctx: &AgentContext) -> Result<Finished, AgentError> {
        Task::new(&spec(word), op, ctx).run_blocking(&mut Runner::new())
    }

    // ==== Tests for the Start state ====

    #[test]
    fn start_status_stop_pass_args_before_op() {
        let d = Dirs::new("cycle");
        let ctx = d.ctx(false);
        assert_eq!(
            run("web::x", Op::Status, &ctx).unwrap().state,
            ResourceState::Stopped
        );
        assert!(!check_already_active(&spec("web::x"), &ctx));
        assert_eq!(
            run("web::x", Op::Start, &ctx).unwrap().state,
            ResourceState::Running
        );
        assert_eq!(
            run("web::x", Op::Status, &ctx).unwrap().state,
            ResourceState::Running
        );
        assert!(check_already_active(&spec("web::x"), &ctx));
        assert_eq!(
            run("web::x", Op::Stop, &ctx).unwrap().state,
            ResourceState::Stopped
        );
        let calls = std::fs::read_to_string(d.root.join("calls")).unwrap();
        assert_eq!(
            calls,
            "x status\nx status\nx start\nx status\nx status\nx stop\n"
        );
    }

    #[test]
    fn start_failing_init_d_script_reports_code_and_stderr() {
        let d = Dirs::new("broken");
        let e = run("broken", Op::Start, &d.ctx(false)).unwrap_err();
        assert_eq!(
            (e.kind, e.code, e.stderr.as_str()),
            (ErrorKind::Exit, Some(1), "cannot start")
        );
        assert!(e.cmd.unwrap().ends_with("init.d/broken start"));
        let status = run("broken", Op::Status, &d.ctx(false)).unwrap_err();
        assert_eq!(status.kind, ErrorKind::StatusUnknown);
    }

    #[test]
    fn start_missing_script_names_both_dirs_stop_succeeds() {
        let d = Dirs::new("missing");
        let e = run("apache", Op::Start, &d.ctx(false)).unwrap_err();
        assert_eq!(e.kind, ErrorKind::NoScript);
        assert!(
            e.stderr.contains("resource.d") && e.stderr.contains("init.d"),
            "{}",
            e.stderr
        );
        assert_eq!(
            run("apache", Op::Stop, &d.ctx(false)).unwrap().state,
            ResourceState::Stopped
        );
    }

    #[test]
    fn start_without_script_under_systemd_uses_systemctl() {
        let d = Dirs::new("systemd");
        let Plan::Steps { steps, .. } = plan(&spec("apache2"), Op::Status, &d.ctx(true)) else {
            panic!("steps")
        };
        assert!(steps[0]
            .req
            .command_line()
            .ends_with("systemctl is-active apache2"));
        assert_eq!(steps[0].accept, Accept::LsbStatus);
    }
}
