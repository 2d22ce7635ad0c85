//! One file per CLI command family; each turns validated args into calls on
//! the library modules and prints the result.
pub mod check_config;
pub mod explain;
pub mod logtest;
pub mod manual;
pub mod run;
