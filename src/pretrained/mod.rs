//! Pretrained weights in HF layout, loaded by name into our models: one name map per model
//! family (beside the model it fills), a report of what was loaded, left at init or unused.

pub mod bert;
