//! What a user asks for: each operation works on a [`crate::repo::Repository`] and,
//! where it reads them, on [`crate::source`]s. Operations that change or send much
//! first compute a plan the CLI can print (`--dry-run`), then carry it out.

pub mod backup;
pub mod check;
pub mod diff;
pub mod drill;
pub mod dump;
pub mod dump_tables;
pub mod export;
pub mod find;
pub mod metrics;
pub mod mount;
pub mod ngw_part;
pub mod prune;
pub mod repair;
pub mod restore;
pub mod retention;
pub mod select;
pub mod sync;
pub mod tag;
pub mod wal;
