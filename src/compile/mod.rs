//! `compile`: staging package sources, running each packaging script in a sandbox over the
//! compilation base, scheduling the package DAG, and storing results as OCI layers.

pub mod key;
pub mod orchestrate;
pub mod package;
pub mod report;
pub mod runner;
pub mod scheduler;
pub mod stage;
