//! `haresources`: resource groups, syntax only for now (the takeover issue acts on it).
//!
//! Layer: pure parser. One logical line (backslash continuation) is one group: the
//! preferred node, then resources. A bare address is `IPaddr::ADDR`; `Name::a::b`
//! is resource `Name` with arguments `a`, `b`.

use super::{ConfigError, ConfigWarning, FileKind};

/// One resource of a group, in start order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceSpec {
    /// The resource agent name (`IPaddr`, `drbddisk`, `Filesystem`, `apache`...).
    pub name: String,
    /// The `::`-separated arguments.
    pub args: Vec<String>,
    /// The word as written in the file (for messages and the digest).
    pub text: String,
}

/// One resource group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    /// The preferred node.
    pub node: String,
    /// Resources in start order.
    pub resources: Vec<ResourceSpec>,
    /// 1-based line where the group starts.
    pub line: usize,
}

/// The parsed file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Haresources {
    /// Groups in file order.
    pub groups: Vec<Group>,
}

/// Parses `haresources`; every group's node must be one of `nodes` (from ha.cf).
pub fn parse(
    text: &str,
    nodes: &[String],
    warnings: &mut Vec<ConfigWarning>,
) -> Result<Haresources, ConfigError> {
    let _ = (text, nodes, warnings, FileKind::Haresources);
    todo!("config helper")
}
