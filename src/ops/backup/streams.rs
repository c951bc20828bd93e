//! Streams: standard input, commands, database dumps and imported archives, stored one
//! after another, each cut against its previous version.

use std::io::{self, Read};
use std::path::Path;

use super::vdir::{synthetic_meta, VDir};
use super::{
    add, archive, db, ngw, pg_base, stream_components, BackupOptions, Databases, Run, STREAM_MODE,
};
use crate::error::{Error, IoContext, Result, Usage};
use crate::format::chunker::Profile;
use crate::format::id::TreeId;
use crate::format::snapshot::Source;
use crate::format::tree::{Content, Node, NodeKind, Timestamp};
use crate::progress::Phase;
use crate::source::command::Running;

impl Run<'_> {
    /// Stores the stream sources (stdin, commands, databases, an archive, NGW) into a
    /// new root; returns it with their [`Source`] records (but NGW's, which is known
    /// before), and the NGW instance's external raster storages left out.
    pub(super) fn streams(
        &self,
        opts: &BackupOptions,
        stdin: Option<&mut (dyn Read + Send)>,
        dbs: &Databases,
        ngw_config: Option<&crate::source::ngw::NgwConfig>,
        parent_tree: Option<TreeId>,
        now: Timestamp,
    ) -> Result<(VDir, Vec<Source>, Vec<String>)> {
        let mut root = VDir::default();
        let mut sources = Vec::new();
        let mut skipped = Vec::new();
        if let Some(name) = &opts.stdin_name {
            let comps = stream_components(name)?;
            let input = stdin.ok_or(Usage::NoStdin)?;
            self.progress.phase(Phase::Reading);
            let prev = self.hints(self.previous(&comps));
            let (content, size) = self
                .ingest(input, self.stream_params, None, prev)?
                .at("<stdin>")?;
            self.put_stream(&mut root, &comps, content, size, STREAM_MODE, now)?;
            sources.push(Source::Stdin {
                name: name.clone(),
                profile: opts.stream_profile,
            });
        }
        for (command, name) in &opts.commands {
            if let Some(w) = crate::source::command::compression_warning(command) {
                log::warn!("{w}");
            }
            self.progress.phase(Phase::Reading);
            let mut sh = std::process::Command::new("sh");
            sh.arg("-c").arg(command);
            self.stream_command(sh, command, name, &mut root, now)?;
            sources.push(Source::Command {
                command: command.clone(),
                name: name.clone(),
                profile: opts.stream_profile,
                exit_status: 0,
            });
        }
        for (command, name) in &opts.command_dirs {
            self.progress.phase(Phase::Dumping);
            sources.push(db::command_dir(self, command, name, &mut root, now)?);
        }
        for dsn in &dbs.pg {
            self.progress.phase(Phase::Dumping);
            sources.push(db::pg(self, dsn, &mut root, now)?);
        }
        for dsn in &dbs.pg_all {
            self.progress.phase(Phase::Dumping);
            sources.push(db::pg_all(self, dsn, &mut root, now)?);
        }
        for dsn in &dbs.pg_base {
            self.progress.phase(Phase::Dumping);
            sources.push(pg_base::pg_base(self, dsn, &mut root)?);
        }
        for uri in &dbs.mongo {
            self.progress.phase(Phase::Dumping);
            sources.push(db::mongo(self, uri, &mut root, now)?);
        }
        if let Some((path, blake3)) = &opts.archive {
            self.progress.phase(Phase::Reading);
            archive::import(self, path, &mut root, now)?;
            sources.push(Source::Archive {
                file: path
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
                blake3: *blake3,
            });
        }
        if let Some(cfg) = ngw_config {
            self.progress.phase(Phase::Dumping);
            skipped = ngw::backup(self, cfg, opts, parent_tree, &mut root, now)?;
        }
        Ok((root, sources, skipped))
    }

    /// Records a stream that went through [`Run::ingest`] (stdin, command output, a
    /// dump file, an archive member) as a file at `at`, counted as read.
    pub(super) fn put_stream(
        &self,
        root: &mut VDir,
        at: &[Vec<u8>],
        content: Content,
        size: u64,
        mode: u32,
        mtime: Timestamp,
    ) -> Result<()> {
        add(&self.counts.files, 1);
        add(&self.counts.files_read, 1);
        self.progress.items(1);
        add(&self.counts.bytes_total, size);
        let node = Node {
            name: Vec::new(),
            kind: NodeKind::File(content),
            meta: synthetic_meta(mode, size, mtime),
        };
        root.insert(at, node)
    }

    /// Runs `cmd` (`display` names it) and stores its standard output at `name`. A
    /// command that fails or is killed is an error quoting its stderr; a successful one
    /// that wrote to stderr, or whose output is compressed, is warned about (on the
    /// log: the snapshot is still complete).
    pub(super) fn stream_command(
        &self,
        cmd: std::process::Command,
        display: &str,
        name: &str,
        root: &mut VDir,
        now: Timestamp,
    ) -> Result<()> {
        let comps = stream_components(name)?;
        self.progress.entry(Path::new(name));
        let mut child = Running::start(cmd, display)?;
        let mut sniff = crate::source::command::Sniff::new(child.stdout());
        let prev = self.hints(self.previous(&comps));
        let read = match self.ingest(&mut sniff, self.stream_params, None, prev) {
            Ok(r) => r,
            Err(e) => {
                child.kill();
                return Err(e);
            }
        };
        let format = sniff.compressed();
        let stderr = child.finish()?;
        let (content, size) = read.map_err(|e| Error::Command {
            command: display.to_string(),
            status: format!("output could not be read: {e}"),
            stderr: String::new(),
        })?;
        if !stderr.trim().is_empty() {
            log::warn!(
                "command `{display}` succeeded but wrote to stderr: {}",
                stderr.trim_end()
            );
        }
        if let Some(format) = format {
            log::warn!(
                "the output of `{display}` is {format}-compressed, which defeats deduplication: every run stores it whole. Store it uncompressed (drop the compressor, pg_dump -Z0) and let snap compress"
            );
        }
        self.put_stream(root, &comps, content, size, STREAM_MODE, now)
    }

    /// Stores bytes snap generated (a restore list, an `$index`) as a file at `at`.
    pub(super) fn put_bytes(
        &self,
        root: &mut VDir,
        at: &[Vec<u8>],
        bytes: Vec<u8>,
        now: Timestamp,
    ) -> Result<()> {
        self.put_bytes_as(root, at, &bytes, STREAM_MODE, now)
    }

    /// [`Run::put_bytes`] with the file's mode and time.
    pub(super) fn put_bytes_as(
        &self,
        root: &mut VDir,
        at: &[Vec<u8>],
        bytes: &[u8],
        mode: u32,
        mtime: Timestamp,
    ) -> Result<()> {
        let params = self.repo.params(Profile::Dump);
        let (content, size) = self
            .ingest(&mut io::Cursor::new(bytes), params, None, None)?
            .at("<generated file>")?;
        self.put_stream(root, at, content, size, mode, mtime)
    }
}
