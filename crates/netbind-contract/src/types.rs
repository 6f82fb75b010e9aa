//! Newtypes for kernel limits, validated once at the edge.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Linux `IFNAMSIZ` is 16 including the terminating NUL.
pub const IFNAME_MAX: usize = 15;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IfNameError {
    #[error("interface name is empty")]
    Empty,
    #[error("interface name {0:?} is longer than {IFNAME_MAX} bytes")]
    TooLong(String),
    #[error("interface name {0:?} contains '/', whitespace, ':' or NUL")]
    BadChar(String),
    #[error("interface name {0:?} is reserved ('.' or '..')")]
    Reserved(String),
}

/// A Linux network interface name: 1..=15 bytes, none of `/`, `:`, NUL or whitespace
/// (the kernel's `dev_valid_name`, plus ':' which `ip` treats as an alias separator).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IfName(String);

impl IfName {
    pub fn new(text: impl Into<String>) -> Result<Self, IfNameError> {
        let text = text.into();
        if text.is_empty() {
            return Err(IfNameError::Empty);
        }
        if text.len() > IFNAME_MAX {
            return Err(IfNameError::TooLong(text));
        }
        if text == "." || text == ".." {
            return Err(IfNameError::Reserved(text));
        }
        if text
            .chars()
            .any(|c| c == '/' || c == ':' || c == '\0' || c.is_whitespace())
        {
            return Err(IfNameError::BadChar(text));
        }
        Ok(Self(text))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IfName {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        out.write_str(&self.0)
    }
}

impl FromStr for IfName {
    type Err = IfNameError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::new(text)
    }
}

impl Serialize for IfName {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for IfName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::new(text).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MacError {
    #[error("malformed MAC address ({0})")]
    Malformed(String),
    #[error("too long MAC address ({0})")]
    TooLong(String),
}

/// An EUI-48 MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// The static MAC KubeVirt gives the masquerade bridge so it never adopts the tap's MAC.
    pub const MASQUERADE_BRIDGE: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0]);

    pub fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// Parses every form Go's `net.ParseMAC` accepts and rejects anything longer than 6 bytes,
    /// as KubeVirt's admission does ("malformed" vs "too long").
    pub fn parse_go(text: &str) -> Result<Self, MacError> {
        let bytes = parse_go_mac(text).ok_or_else(|| MacError::Malformed(text.to_string()))?;
        if bytes.len() > 6 {
            return Err(MacError::TooLong(text.to_string()));
        }
        let mut out = [0u8; 6];
        out.copy_from_slice(&bytes);
        Ok(Self(out))
    }
}

/// Go's `net.ParseMAC`: 6, 8 or 20 bytes, as `xx:xx:..`, `xx-xx-..` or `xxxx.xxxx.xxxx`.
fn parse_go_mac(text: &str) -> Option<Vec<u8>> {
    fn hex(byte: u8) -> Option<u8> {
        (byte as char)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    }
    let bytes = text.as_bytes();
    if bytes.len() < 14 {
        return None;
    }
    let mut out = Vec::new();
    if bytes[2] == b':' || bytes[2] == b'-' {
        if !(bytes.len() + 1).is_multiple_of(3) {
            return None;
        }
        let count = (bytes.len() + 1) / 3;
        if count != 6 && count != 8 && count != 20 {
            return None;
        }
        for idx in 0..count {
            let start = idx * 3;
            if idx + 1 < count && bytes[start + 2] != bytes[2] {
                return None;
            }
            out.push(hex(bytes[start])? << 4 | hex(bytes[start + 1])?);
        }
    } else if bytes[4] == b'.' {
        if !(bytes.len() + 1).is_multiple_of(5) {
            return None;
        }
        let count = 2 * (bytes.len() + 1) / 5;
        if count != 6 && count != 8 && count != 20 {
            return None;
        }
        for idx in 0..count / 2 {
            let start = idx * 5;
            if idx + 1 < count / 2 && bytes[start + 4] != b'.' {
                return None;
            }
            out.push(hex(bytes[start])? << 4 | hex(bytes[start + 1])?);
            out.push(hex(bytes[start + 2])? << 4 | hex(bytes[start + 3])?);
        }
    } else {
        return None;
    }
    Some(out)
}

impl fmt::Display for MacAddr {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [b0, b1, b2, b3, b4, b5] = self.0;
        write!(out, "{b0:02x}:{b1:02x}:{b2:02x}:{b3:02x}:{b4:02x}:{b5:02x}")
    }
}

impl FromStr for MacAddr {
    type Err = MacError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse_go(text)
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Self::parse_go(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ifname_limits() {
        assert!(IfName::new("k6t-914f438d88d").is_ok());
        assert_eq!(
            IfName::new("k6t-914f438d88dx"),
            Err(IfNameError::TooLong("k6t-914f438d88dx".into()))
        );
        assert!(matches!(IfName::new(""), Err(IfNameError::Empty)));
        assert!(matches!(IfName::new("a/b"), Err(IfNameError::BadChar(_))));
        assert!(matches!(IfName::new(".."), Err(IfNameError::Reserved(_))));
    }

    #[test]
    fn mac_forms_like_go() {
        let want = MacAddr([0xde, 0xad, 0, 0, 0xbe, 0xaf]);
        assert_eq!(MacAddr::parse_go("de:ad:00:00:be:af"), Ok(want));
        assert_eq!(MacAddr::parse_go("DE-AD-00-00-BE-AF"), Ok(want));
        assert_eq!(MacAddr::parse_go("dead.0000.beaf"), Ok(want));
        assert_eq!(want.to_string(), "de:ad:00:00:be:af");
        assert!(matches!(
            MacAddr::parse_go("de:ad:00:00:be"),
            Err(MacError::Malformed(_))
        ));
        assert!(matches!(
            MacAddr::parse_go("de:ad-00:00:be:af"),
            Err(MacError::Malformed(_))
        ));
        assert!(matches!(
            MacAddr::parse_go("zz:ad:00:00:be:af"),
            Err(MacError::Malformed(_))
        ));
        assert!(matches!(
            MacAddr::parse_go("02:00:5e:10:00:00:00:01"),
            Err(MacError::TooLong(_))
        ));
    }

    proptest::proptest! {
        #[test]
        fn mac_parse_never_panics(s in ".{0,70}") {
            let _ = MacAddr::parse_go(&s);
        }

        #[test]
        fn mac_display_roundtrips(o in proptest::array::uniform6(0u8..)) {
            let mac = MacAddr(o);
            proptest::prop_assert_eq!(MacAddr::parse_go(&mac.to_string()), Ok(mac));
        }
    }
}
