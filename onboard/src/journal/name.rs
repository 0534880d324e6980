//! File names kept exactly as the file system holds them. A journal record names its image by
//! the bytes of the file name (on Unix any byte but `/` and NUL), stored as a JSON string when
//! the name is UTF-8 and as `{"bytes": [..]}` otherwise, so two names never merge into one
//! record. [`FileName::display`] escapes what a terminal or a table would blur, so two different
//! names are never printed alike.

use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The name of a file inside its folder, byte for byte.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileName(Vec<u8>);

impl FileName {
    /// The last component of `path` (`None` for `/`, `..` and the like).
    pub fn of(path: &Path) -> Option<Self> {
        path.file_name().map(Self::from_os)
    }

    /// The name `os` holds (on Unix its bytes; elsewhere its Unicode text, lossily).
    pub fn from_os(os: &OsStr) -> Self {
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStrExt;
            Self(os.as_bytes().to_vec())
        }
        #[cfg(not(unix))]
        {
            Self(os.to_string_lossy().into_owned().into_bytes())
        }
    }

    /// The name as the file system takes it.
    pub fn to_os_string(&self) -> OsString {
        #[cfg(unix)]
        {
            use std::os::unix::ffi::OsStringExt;
            OsString::from_vec(self.0.clone())
        }
        #[cfg(not(unix))]
        {
            OsString::from(String::from_utf8_lossy(&self.0).into_owned())
        }
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The name as text, when it is UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// The name for people and scripts, one-to-one with the bytes: UTF-8 text as it is except
    /// `\` (shown `\\`) and control characters (shown `\u{..}`); bytes that are not UTF-8 are
    /// shown `\xNN`. Every `\` starts an escape, so two names never print alike.
    pub fn display(&self) -> String {
        let mut out = String::with_capacity(self.0.len());
        for chunk in self.0.utf8_chunks() {
            for c in chunk.valid().chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    c if c.is_control() => {
                        let _ = write!(out, "\\u{{{:x}}}", c as u32);
                    }
                    c => out.push(c),
                }
            }
            for b in chunk.invalid() {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
        out
    }
}

impl From<&str> for FileName {
    fn from(s: &str) -> Self {
        Self(s.as_bytes().to_vec())
    }
}

impl std::fmt::Display for FileName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display())
    }
}

impl Serialize for FileName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match std::str::from_utf8(&self.0) {
            Ok(text) => s.serialize_str(text),
            Err(_) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("bytes", &self.0)?;
                m.end()
            }
        }
    }
}

/// Reads a stored name: a string, or `{"bytes": [..]}`.
struct NameVisitor;

impl<'de> serde::de::Visitor<'de> for NameVisitor {
    type Value = FileName;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a file name (a string, or {\"bytes\": [..]} for a name that is not UTF-8)")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<FileName, E> {
        Ok(FileName::from(v))
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<FileName, A::Error> {
        let mut bytes: Option<Vec<u8>> = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key != "bytes" || bytes.is_some() {
                return Err(serde::de::Error::custom(format!(
                    "unexpected key {key:?} in a file name; expected one \"bytes\""
                )));
            }
            bytes = Some(map.next_value()?);
        }
        bytes
            .map(FileName)
            .ok_or_else(|| serde::de::Error::missing_field("bytes"))
    }
}

impl<'de> Deserialize<'de> for FileName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NameVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_never_print_alike() {
        let names = [
            FileName(b"img0001.JPG".to_vec()),
            FileName(b"caf\xe9.png".to_vec()),
            FileName(b"caf\xef.png".to_vec()),
            FileName("caf\\xe9.png".as_bytes().to_vec()),
            FileName(b"a\nb".to_vec()),
            FileName("a\\u{a}b".as_bytes().to_vec()),
            FileName("é.png".as_bytes().to_vec()),
        ];
        let shown: std::collections::HashSet<String> =
            names.iter().map(FileName::display).collect();
        assert_eq!(shown.len(), names.len(), "{shown:?}");
        assert_eq!(names[1].display(), "caf\\xe9.png");
        assert_eq!(names[3].display(), "caf\\\\xe9.png");
        assert_eq!(names[4].display(), "a\\u{a}b");
        for n in &names {
            let json = serde_json::to_string(n).unwrap();
            let back: FileName = serde_json::from_str(&json).unwrap();
            assert_eq!(&back, n, "{json}");
        }
        assert_eq!(serde_json::to_string(&names[0]).unwrap(), "\"img0001.JPG\"");
        assert_eq!(
            serde_json::to_string(&names[1]).unwrap(),
            "{\"bytes\":[99,97,102,233,46,112,110,103]}"
        );
    }

    #[cfg(unix)]
    #[test]
    fn os_names_are_kept_byte_for_byte() {
        use std::os::unix::ffi::OsStrExt;
        let raw = OsStr::from_bytes(b"x\xff\xfe.jpg");
        let n = FileName::of(Path::new("/some/dir").join(raw).as_path()).unwrap();
        assert_eq!(n.as_bytes(), b"x\xff\xfe.jpg");
        assert_eq!(n.to_os_string(), raw);
        assert!(n.as_str().is_none());
    }
}
