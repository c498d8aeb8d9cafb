//! Graph -> StableHLO lowering. Filled in by the graph issue.
