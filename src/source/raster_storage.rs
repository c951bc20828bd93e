//! The external raster storages of a NextGIS Web instance (5.4 and later): S3-compatible
//! buckets that hold raster layers NGW's own backup does not carry.
//!
//! A `raster_layer_storage` row (a resource) names an endpoint, a bucket, a key prefix
//! and the access keys (none for a public bucket); a `raster_layer` row points at one
//! with `storage_id` and names its object with `storage_filename`. The object's key is
//! NGW's `vsi_path`: the prefix without trailing slashes, a slash, and the file name
//! without leading ones.
//!
//! The keys come from the instance's own rows and go to the S3 client directly: never
//! into a process argument, a log line, an error or a snapshot.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The S3 region of the storages when none is given: GDAL's default, which NGW reads
/// them with.
pub const GDAL_REGION: &str = "us-east-1";

/// One `raster_layer_storage` row. Its access keys are private (no `Debug`): only
/// [`Bucket::open`] reads them.
#[derive(Clone)]
pub struct RasterStorage {
    /// Resource id.
    pub id: i32,
    /// The resource's display name, for messages.
    pub name: String,
    /// Endpoint URL (`https://storage.example.com`).
    pub endpoint: String,
    /// Bucket.
    pub bucket: String,
    /// Key prefix (may be empty).
    pub prefix: String,
    /// Access key id and secret; `None` for a public bucket.
    #[cfg_attr(not(feature = "remote"), allow(dead_code))]
    keys: Option<(String, String)>,
}

impl RasterStorage {
    /// A storage row as read from the database.
    pub fn new(
        id: i32,
        name: String,
        endpoint: String,
        bucket: String,
        prefix: String,
        keys: Option<(String, String)>,
    ) -> RasterStorage {
        RasterStorage {
            id,
            name,
            endpoint,
            bucket,
            prefix,
            keys,
        }
    }

    /// The object key of `filename` in this storage, as NGW's `vsi_path` builds it.
    pub fn key(&self, filename: &str) -> String {
        object_key(&self.prefix, filename)
    }

    /// The endpoint as NGW hands it to GDAL: the scheme (`https`, else `http`) and the
    /// host and port of the row's URL, nothing of its path.
    pub fn endpoint_url(&self) -> String {
        let (scheme, rest) = match self.endpoint.split_once("://") {
            Some((scheme, rest)) => (scheme, rest),
            None => ("http", self.endpoint.as_str()),
        };
        let netloc = rest.split('/').next().unwrap_or_default();
        let scheme = if scheme.eq_ignore_ascii_case("https") {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{netloc}")
    }

    /// `name (endpoint, bucket)`, for messages.
    pub fn describe(&self) -> String {
        format!(
            "raster layer storage {:?} (id {}, {}, bucket {})",
            self.name, self.id, self.endpoint, self.bucket
        )
    }
}

/// `prefix/filename` as NGW joins them: no trailing slash on the prefix, no leading one
/// on the file name, no slash at all when the prefix is empty.
pub fn object_key(prefix: &str, filename: &str) -> String {
    let prefix = prefix.trim_end_matches('/');
    let filename = filename.trim_start_matches('/');
    if prefix.is_empty() {
        filename.to_string()
    } else {
        format!("{prefix}/{filename}")
    }
}

/// Whether S3 clients (snap's, which normalizes paths, as GDAL's) reach the object of
/// `key` as it is named: no empty, `.` or `..` part, no space at either end.
pub fn plain_key(key: &str) -> bool {
    !key.is_empty()
        && key.trim() == key
        && key
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

/// An object a raster layer keeps in an external storage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RasterObject {
    /// The storage's id.
    pub storage: i32,
    /// The layer's `storage_filename`.
    pub filename: String,
}

/// The snapshot path `ngw/raster_layer_storage/<path>` (`path` split at `/`): where
/// the objects and their `$index` are.
pub fn snapshot_path(path: &str) -> Vec<Vec<u8>> {
    let mut comps = crate::source::ngw::snapshot_path(&["raster_layer_storage"]);
    comps.extend(path.split('/').map(|c| c.as_bytes().to_vec()));
    comps
}

/// One line of the snapshot's `raster_layer_storage/$index`: an object it holds, where
/// it came from and how it looked then. No credentials.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredObject {
    /// The storage's id.
    pub storage: i32,
    /// The storage's display name.
    pub name: String,
    /// Endpoint, bucket and prefix at backup time.
    pub endpoint: String,
    /// Bucket.
    pub bucket: String,
    /// Key prefix.
    pub prefix: String,
    /// The raster layer's `storage_filename`.
    pub filename: String,
    /// The object's key in the bucket.
    pub key: String,
    /// Its size, ETag and modification time (RFC 3339) when it was read: an object
    /// that still has all three is not read again.
    pub size: u64,
    /// ETag as the store gave it.
    pub etag: String,
    /// Last-Modified, RFC 3339.
    pub modified: String,
    /// Where the object is in the snapshot, below `ngw/raster_layer_storage/`.
    pub path: String,
}

impl StoredObject {
    /// The snapshot path of the object of `key` in storage `storage`, below
    /// `ngw/raster_layer_storage/`: `<id>/<key>` when every part of the key can be a
    /// name in a snapshot and the key is no other key's folder (`a` beside `a/b`), else
    /// `<id>/~<BLAKE3 of the key>`.
    pub fn path_for(storage: i32, key: &str, a_folder: bool) -> String {
        let plain = !a_folder
            && !key.is_empty()
            && key
                .split('/')
                .all(|c| crate::format::tree::is_safe_name(c.as_bytes()));
        if plain {
            format!("{storage}/{key}")
        } else {
            format!("{storage}/~{}", blake3::hash(key.as_bytes()).to_hex())
        }
    }

    /// Parses one `$index` line.
    pub fn parse(line: &str) -> Result<StoredObject> {
        let o: StoredObject = serde_json::from_str(line).map_err(|e| {
            Error::corrupt("snapshot", "ngw/raster_layer_storage/$index", e.to_string())
        })?;
        if crate::format::tree::split_path(&o.path).is_none_or(|p| p.is_empty()) {
            return Err(Error::corrupt(
                "snapshot",
                "ngw/raster_layer_storage/$index",
                format!("unsafe path {:?}", o.path),
            ));
        }
        Ok(o)
    }

    /// Parses a whole `$index`.
    pub fn parse_index(text: &[u8]) -> Result<Vec<StoredObject>> {
        String::from_utf8_lossy(text)
            .lines()
            .map(StoredObject::parse)
            .collect()
    }

    /// The `$index` line (JSON, one line, newline-terminated).
    pub fn line(&self) -> String {
        let mut s = serde_json::to_string(self).expect("index lines serialize");
        s.push('\n');
        s
    }
}

/// `--ngw-storage ID=URL`: restore storage `id`'s objects to another endpoint, bucket
/// and prefix (`http://host:port/bucket/prefix`), and point its row there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageMap {
    /// The storage's resource id.
    pub id: i32,
    /// Endpoint URL (scheme, host and port).
    pub endpoint: String,
    /// Bucket.
    pub bucket: String,
    /// Key prefix (may be empty).
    pub prefix: String,
}

impl StorageMap {
    /// Parses `ID=SCHEME://HOST[:PORT]/BUCKET[/PREFIX]`.
    pub fn parse(s: &str) -> std::result::Result<StorageMap, String> {
        let usage = "expected ID=http(s)://HOST[:PORT]/BUCKET[/PREFIX], e.g. 12=https://s3.example.com/rasters/ngw";
        let (id, url) = s.split_once('=').ok_or(usage)?;
        let id = id
            .trim()
            .parse()
            .map_err(|_| format!("{id:?} is not a storage id; {usage}"))?;
        let (scheme, rest) = url.split_once("://").ok_or(usage)?;
        if scheme != "http" && scheme != "https" {
            return Err(format!("scheme {scheme:?}: {usage}"));
        }
        let (host, path) = rest.split_once('/').ok_or(usage)?;
        let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
        if host.is_empty() || bucket.is_empty() {
            return Err(usage.to_string());
        }
        Ok(StorageMap {
            id,
            endpoint: format!("{scheme}://{host}"),
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
        })
    }
}

/// What a HEAD of an object says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Size in bytes.
    pub size: u64,
    /// ETag.
    pub etag: String,
    /// Last-Modified, RFC 3339 (empty when the store gave none).
    pub modified: String,
}

#[cfg(feature = "remote")]
pub use bucket::Bucket;

#[cfg(feature = "remote")]
mod bucket {
    use std::time::Duration;

    use opendal::options::{ReaderOptions, WriteOptions};
    use opendal::{blocking, services, ErrorKind, Operator};

    use std::io::Read;

    use super::{ObjectMeta, RasterStorage};
    use crate::error::{Error, Result};
    use crate::store::remote::{blocking_with_retries, s3_words};

    /// Part size of uploads (multipart above it) and parts in flight.
    const PART: usize = 8 << 20;
    const PARTS_IN_FLIGHT: usize = 4;

    /// What the store said, and where the settings it depends on are: the storage's
    /// resource in NGW, not snap's environment.
    fn words(e: &opendal::Error) -> String {
        format!(
            "{}; check the endpoint, bucket and keys of this raster layer storage in NextGIS Web, and the network",
            s3_words(e)
        )
    }

    /// A client of one external storage's bucket, with the storage's own keys.
    pub struct Bucket {
        op: blocking::Operator,
        what: String,
    }

    impl Bucket {
        /// Connects to `s`'s bucket; `region` is the S3 region (GDAL's default,
        /// `us-east-1`, when the environment names none).
        pub fn open(s: &RasterStorage, region: &str) -> Result<Bucket> {
            let what = s.describe();
            let fail = |e: opendal::Error| Error::Storage {
                location: what.clone(),
                detail: words(&e),
            };
            let mut b = services::S3::default()
                .endpoint(&s.endpoint_url())
                .bucket(&s.bucket)
                .region(region)
                .disable_config_load()
                .disable_ec2_metadata();
            b = match &s.keys {
                Some((id, secret)) => b.access_key_id(id).secret_access_key(secret),
                None => b.allow_anonymous(),
            };
            let op = Operator::new(b)
                .map(opendal::OperatorBuilder::finish)
                .and_then(|op| {
                    blocking_with_retries(
                        op,
                        Duration::from_secs(5),
                        3,
                        crate::store::DEFAULT_SILENCE,
                    )
                })
                .map_err(fail)?;
            Ok(Bucket { op, what })
        }

        fn err(&self, key: &str, e: &opendal::Error) -> Error {
            Error::Storage {
                location: format!("{}: object {key}", self.what),
                detail: words(e),
            }
        }

        /// The object's size, ETag and time; `None` when it does not exist.
        pub fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
            match self.op.stat(key) {
                Ok(m) => Ok(Some(ObjectMeta {
                    size: m.content_length(),
                    etag: m.etag().unwrap_or_default().to_string(),
                    modified: m
                        .last_modified()
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_default(),
                })),
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
                Err(e) => Err(self.err(key, &e)),
            }
        }

        /// A reader of the object as it was when its ETag was `etag`: a change since
        /// makes the read fail rather than mix two versions.
        pub fn reader(&self, key: &str, etag: &str) -> Result<impl Read + Send> {
            let r = self
                .op
                .reader_options(
                    key,
                    ReaderOptions {
                        if_match: (!etag.is_empty()).then(|| etag.to_string()),
                        chunk: Some(PART),
                        ..Default::default()
                    },
                )
                .and_then(|r| r.into_std_read(..))
                .map_err(|e| self.err(key, &e))?;
            Ok(r)
        }

        /// Uploads the bytes `fill` writes as the object at `key` (multipart above
        /// 8 MiB, visible only once whole).
        pub fn put(
            &self,
            key: &str,
            fill: impl FnOnce(&mut dyn std::io::Write) -> Result<u64>,
        ) -> Result<u64> {
            let w = self
                .op
                .writer_options(
                    key,
                    WriteOptions {
                        chunk: Some(PART),
                        concurrent: PARTS_IN_FLIGHT,
                        ..Default::default()
                    },
                )
                .map_err(|e| self.err(key, &e))?;
            let mut w = w.into_std_write();
            let n = fill(&mut w)?;
            w.close().map_err(|e| Error::Storage {
                location: format!("{}: object {key}", self.what),
                detail: e.to_string(),
            })?;
            Ok(n)
        }
    }
}

/// A build without the `remote` feature reaches no external storage: no bucket can be
/// opened, so none is ever used.
#[cfg(not(feature = "remote"))]
pub enum Bucket {}

#[cfg(not(feature = "remote"))]
impl Bucket {
    /// Always an error: this build has no S3 client.
    pub fn open(s: &RasterStorage, _region: &str) -> Result<Bucket> {
        Err(crate::error::Usage::NoRemoteStores {
            location: s.describe(),
        }
        .into())
    }

    /// Never called: there is no bucket.
    pub fn head(&self, _key: &str) -> Result<Option<ObjectMeta>> {
        match *self {}
    }

    /// Never called: there is no bucket.
    pub fn reader(&self, _key: &str, _etag: &str) -> Result<std::io::Empty> {
        match *self {}
    }

    /// Never called: there is no bucket.
    pub fn put(
        &self,
        _key: &str,
        _fill: impl FnOnce(&mut dyn std::io::Write) -> Result<u64>,
    ) -> Result<u64> {
        match *self {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_maps_parse() {
        assert_eq!(
            StorageMap::parse("12=https://s3.example.com:9000/rasters/ngw/prod/").unwrap(),
            StorageMap {
                id: 12,
                endpoint: "https://s3.example.com:9000".into(),
                bucket: "rasters".into(),
                prefix: "ngw/prod".into(),
            }
        );
        assert_eq!(StorageMap::parse("3=http://h/b").unwrap().prefix, "");
        for bad in ["x=http://h/b", "3=s3://b", "3=http://h", "3=http:///b", "3"] {
            assert!(StorageMap::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_join_as_ngw_vsi_path_does() {
        assert_eq!(object_key("", "a.tif"), "a.tif");
        assert_eq!(object_key("rasters/", "/a.tif"), "rasters/a.tif");
        assert_eq!(object_key("x//", "//y/a.tif"), "x/y/a.tif");
    }

    #[test]
    fn snapshot_paths_keep_plain_keys_and_hash_others() {
        assert_eq!(StoredObject::path_for(7, "r/a.tif", false), "7/r/a.tif");
        for odd in ["a//b", "../x", "/abs", "", "a/./b"] {
            let p = StoredObject::path_for(7, odd, false);
            assert!(p.starts_with("7/~") && p.len() == 2 + 1 + 64, "{odd}: {p}");
        }
        assert!(StoredObject::path_for(7, "r", true).starts_with("7/~"));
    }

    #[test]
    fn keys_that_clients_would_rewrite_are_told() {
        assert!(plain_key("ngw/a.tif"));
        for odd in ["", "a//b", "./a", "a/..", " a.tif", "a.tif\n", "/a"] {
            assert!(!plain_key(odd), "{odd:?}");
        }
    }

    #[test]
    fn endpoints_keep_scheme_and_host_as_ngw_does() {
        let s = |e: &str| {
            RasterStorage::new(1, String::new(), e.into(), "b".into(), String::new(), None)
        };
        assert_eq!(
            s("https://s3.example.com/some/path").endpoint_url(),
            "https://s3.example.com"
        );
        assert_eq!(
            s("http://127.0.0.1:3900").endpoint_url(),
            "http://127.0.0.1:3900"
        );
        assert_eq!(s("HTTPS://h:9000/").endpoint_url(), "https://h:9000");
        assert_eq!(s("ftp://h").endpoint_url(), "http://h");
    }

    #[test]
    fn index_lines_round_trip_and_unsafe_paths_are_refused() {
        let o = StoredObject {
            storage: 3,
            name: "S3".into(),
            endpoint: "http://127.0.0.1:3900".into(),
            bucket: "rasters".into(),
            prefix: "ngw".into(),
            filename: "a.tif".into(),
            key: "ngw/a.tif".into(),
            size: 10,
            etag: "\"abc\"".into(),
            modified: "2026-12-04T00:00:00+00:00".into(),
            path: "3/ngw/a.tif".into(),
        };
        assert_eq!(StoredObject::parse(o.line().trim_end()).unwrap(), o);
        let bad = StoredObject {
            path: "../../etc/passwd".into(),
            ..o
        };
        assert!(StoredObject::parse(bad.line().trim_end()).is_err());
    }
}
