//! Model definitions. Filled in by the model issues.
