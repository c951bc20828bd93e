//! MongoDB connection URIs: what mongodump needs, and what snap may record (the URI
//! without its password).

use crate::error::{Result, Usage};

/// A `mongodb://` or `mongodb+srv://` URI.
#[derive(Clone, Debug)]
pub struct MongoUri {
    full: String,
    shown: String,
    db: Option<String>,
}

impl MongoUri {
    /// Parses the parts snap needs; mongodump checks the rest.
    pub fn parse(uri: &str) -> Result<MongoUri> {
        let (scheme, rest) = uri
            .split_once("://")
            .filter(|(s, _)| *s == "mongodb" || *s == "mongodb+srv")
            .ok_or_else(|| Usage::MongoUri {
                uri: uri.split('@').next_back().unwrap_or_default().to_string(),
            })?;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let authority_shown = match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => {
                let user = userinfo.split(':').next().unwrap_or_default();
                format!("{user}@{hosts}")
            }
            None => authority.to_string(),
        };
        let db = path.split('?').next().filter(|d| !d.is_empty()).map(|d| {
            percent_encoding::percent_decode_str(d)
                .decode_utf8_lossy()
                .into_owned()
        });
        if db
            .as_deref()
            .is_some_and(|d| !crate::format::tree::is_safe_name(d.as_bytes()))
        {
            return Err(Usage::MongoDatabase {
                db: db.unwrap_or_default(),
            }
            .into());
        }
        let shown = if path.is_empty() {
            format!("{scheme}://{authority_shown}")
        } else {
            format!("{scheme}://{authority_shown}/{path}")
        };
        Ok(MongoUri {
            full: uri.to_string(),
            shown,
            db,
        })
    }

    /// The database the URI names, if any.
    pub fn db(&self) -> Option<&str> {
        self.db.as_deref()
    }

    /// The URI without its password.
    pub fn shown(&self) -> String {
        self.shown.clone()
    }

    /// A mongodump `--config` file carrying the URI, so it never appears in process
    /// arguments.
    pub fn config_yaml(&self) -> String {
        format!(
            "uri: {}\n",
            serde_json::to_string(&self.full).expect("strings serialize")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_stays_out_of_what_is_shown() {
        let u = MongoUri::parse("mongodb://app:s3cret@h1:27017,h2/shop?authSource=admin").unwrap();
        assert_eq!(u.shown(), "mongodb://app@h1:27017,h2/shop?authSource=admin");
        assert_eq!(u.db(), Some("shop"));
        assert!(u.config_yaml().contains("s3cret"));
        assert_eq!(MongoUri::parse("mongodb://h").unwrap().db(), None);
        assert!(MongoUri::parse("postgres://h").is_err());
    }
}
