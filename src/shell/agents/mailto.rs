//! `MailTo::ADDR[::SUBJECT]`: a mail on takeover and release.
//!
//! Layer: shell. Start and stop pipe a short message into the local
//! `sendmail -t` through the runner. A host without an MTA is a warning (the
//! op succeeds): a missing notification must never block a takeover. Status
//! is always `Running`: a mail has nothing to monitor or restart.

use super::runner::OpRequest;
use super::{Accept, AgentContext, Finished, Op, Plan, Step, Warning};
use crate::config::{Resource, ResourceSpec};

/// The MTA entry point every MTA (exim, postfix, msmtp...) installs.
pub const SENDMAIL: &str = "/usr/sbin/sendmail";
/// Subject prefix when none is given (Heartbeat's).
pub const SUBJECT_DEFAULT: &str = "Resource Group";

/// The message for `op` (`To:`, `Subject:`, a blank line, a body).
pub fn message(to: &str, subject: &str, op: Op, node: &str) -> String {
    let what = match op {
        Op::Start => format!("Takeover in progress on {node}"),
        _ => format!("Migrating resource away from {node}"),
    };
    format!("To: {to}\nSubject: {subject} {what}\n\n{subject}: {what}\n")
}

/// Plans `op`.
pub(crate) fn plan(spec: &ResourceSpec, op: Op, ctx: &AgentContext) -> Plan {
    let Resource::MailTo { addr: to, subject } = &spec.typed else {
        unreachable!("Task::new dispatches only MailTo resources here");
    };
    let finish = Finished::after(op);
    if op == Op::Status {
        return Plan::Done(Ok(finish));
    }
    if !ctx.sendmail.exists() {
        return Plan::Done(Ok(Finished {
            warning: Some(Warning::NoSendmail),
            ..finish
        }));
    }
    let subject = subject.as_deref().unwrap_or(SUBJECT_DEFAULT);
    let mut req = OpRequest::new(&ctx.sendmail.to_string_lossy(), &["-t"], ctx.timeout);
    req.stdin = Some(message(to, subject, op, &ctx.node));
    Plan::Steps {
        steps: vec![Step::new(req, Accept::Zero)],
        finish,
    }
}

#[cfg(test)]
mod tests {
    use super::super::runner::Runner;
    use super::super::{spec, ResourceState, Task};
    use super::*;
    use crate::time::Duration;

    fn ctx(sendmail: &str) -> AgentContext {
        let mut c = AgentContext::detect("/nonexistent".into(), "debian1".into());
        c.sendmail = sendmail.into();
        c.timeout = Duration::from_secs(5);
        c
    }

    // ==== Tests for the Start state ====

    #[test]
    fn start_without_sendmail_succeeds_with_warning() {
        let t = Task::new(
            &spec("MailTo::root::web"),
            Op::Start,
            &ctx("/nonexistent/sendmail"),
        );
        let f = t.run_blocking(&mut Runner::new()).unwrap();
        assert_eq!(f.warning, Some(Warning::NoSendmail));
        assert_eq!(f.state, ResourceState::Running);
    }

    #[test]
    fn start_pipes_message_to_sendmail() {
        let dir = std::env::temp_dir().join(format!("bascule-mailto-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fake = dir.join("sendmail");
        let out = dir.join("mail.txt");
        let script = format!(
            "#!/bin/sh\n[ \"$1\" = -t ] || exit 2\ncat > {}\n",
            out.display()
        );
        std::fs::write(&fake, script).unwrap();
        std::process::Command::new("chmod")
            .args(["755"])
            .arg(&fake)
            .status()
            .unwrap();
        let t = Task::new(
            &spec("MailTo::root::web"),
            Op::Start,
            &ctx(&fake.to_string_lossy()),
        );
        assert_eq!(t.run_blocking(&mut Runner::new()).unwrap().warning, None);
        let mail = std::fs::read_to_string(&out).unwrap();
        assert!(
            mail.starts_with("To: root\nSubject: web Takeover in progress on debian1\n"),
            "{mail}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
