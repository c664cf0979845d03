//! Protocol versions and their negotiation (`server.version`).

/// Protocol versions ferrum speaks, oldest first (1.5 was skipped by the protocol).
pub const VERSIONS: &[Version] =
    &[Version(1, 4, 0), Version(1, 4, 1), Version(1, 4, 2), Version(1, 4, 3), Version(1, 6, 0), Version(1, 7, 0)];
pub const PROTOCOL_MIN: Version = VERSIONS[0];
pub const PROTOCOL_MAX: Version = VERSIONS[VERSIONS.len() - 1];
pub const V1_6: Version = Version(1, 6, 0);
pub const V1_7: Version = Version(1, 7, 0);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u32, pub u32, pub u32);

impl Version {
    pub fn parse(s: &str) -> Option<Version> {
        let mut parts = s.trim().split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let rev = match parts.next() {
            Some(p) => p.parse().ok()?,
            None => 0,
        };
        parts.next().is_none().then_some(Version(major, minor, rev))
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.2 == 0 {
            write!(f, "{}.{}", self.0, self.1)
        } else {
            write!(f, "{}.{}.{}", self.0, self.1, self.2)
        }
    }
}

/// The version both sides speak: the highest of ours within the client's range and ours.
pub fn negotiate(client_min: Version, client_max: Version) -> Option<Version> {
    let hi = client_max.min(PROTOCOL_MAX);
    let lo = client_min.max(PROTOCOL_MIN);
    VERSIONS.iter().rev().find(|v| **v <= hi && **v >= lo).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_negotiation() {
        let v = |s: &str| Version::parse(s).unwrap();
        assert_eq!(negotiate(v("1.4"), v("1.4")), Some(v("1.4")));
        assert_eq!(negotiate(v("1.2"), v("1.4.2")), Some(v("1.4.2")));
        assert_eq!(negotiate(v("1.4"), v("1.6")), Some(v("1.6")));
        assert_eq!(negotiate(v("1.4"), v("1.6.1")), Some(v("1.6")));
        assert_eq!(negotiate(v("1.4"), v("1.7")), Some(v("1.7")));
        assert_eq!(negotiate(v("1.4"), v("1.8")), Some(v("1.7")));
        assert_eq!(negotiate(v("1.4"), v("1.5")), Some(v("1.4.3")), "1.5 does not exist");
        assert_eq!(negotiate(v("1.0"), v("1.2")), None);
        assert_eq!(negotiate(v("1.7"), v("1.8")), Some(v("1.7")));
        assert_eq!(negotiate(v("1.8"), v("1.9")), None);
        assert_eq!(v("1.4.2").to_string(), "1.4.2");
        assert_eq!(v("1.6").to_string(), "1.6");
        assert!(
            Version::parse("1").is_none() && Version::parse("x.y").is_none() && Version::parse("1.4.2.1").is_none()
        );
    }
}
