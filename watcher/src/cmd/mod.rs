//! One file per CLI command family; each turns validated args into calls on
//! the library modules and prints the result.
pub mod check_config;
mod check_fail2ban;
pub mod explain;
pub mod import_fail2ban;
pub mod logtest;
mod logtest_f2b;
pub mod manual;
pub mod run;
