//! Where backup data comes from: the file system, commands, NextGIS Web instances and
//! databases.
//!
//! This layer knows how to read sources safely (never following a symlink it did not
//! ask for, never blocking on a FIFO, never buffering a stream whole); it knows nothing
//! of repositories.

pub mod command;
pub mod fs;
pub mod mongo;
pub mod ngw;
pub mod pg;
pub mod raster_storage;
pub mod tar_stream;
