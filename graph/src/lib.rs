//! The graph IR. Filled in by the graph issue.
