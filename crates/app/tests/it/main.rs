//! The `tracker` binary, run as a user runs it: a real process, its exit
//! code and its output.

mod access_log;
mod chaos;
mod cli;
mod config_table;
mod db_commands;
mod docs;
mod ha;
mod metrics;
mod migrate_commands;
mod online;
mod pause;
mod scaling;
mod serve;
mod settings_docs;
