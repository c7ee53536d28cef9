//! Name formats of Kubernetes' apimachinery validation
//! (<https://kubernetes.io/docs/concepts/overview/working-with-objects/names/>).

/// RFC 1123 label: at most 63 lowercase alphanumerics or '-', starting and ending alphanumeric.
pub fn dns1123_label(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 63 {
        return Err("must be no more than 63 characters".into());
    }
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !s.chars().all(ok_char) || !alnum(s.chars().next()) || !alnum(s.chars().last()) {
        return Err(
            "a lowercase RFC 1123 label must consist of lower case alphanumeric \
                    characters or '-', and must start and end with an alphanumeric character"
                .into(),
        );
    }
    Ok(())
}

/// RFC 1123 subdomain: at most 253 characters, dot-separated labels.
pub fn dns1123_subdomain(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 253 {
        return Err("must be no more than 253 characters".into());
    }
    if s.split('.').any(|part| dns1123_label(part).is_err()) {
        return Err(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric \
                    characters, '-' or '.', and must start and end with an alphanumeric character"
                .into(),
        );
    }
    Ok(())
}

/// IANA service name, as used for container port names: at most 15 characters, lowercase
/// alphanumerics and '-', at least one letter, no leading, trailing or double '-'.
pub fn iana_svc_name(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 15 {
        return Err("must be no more than 15 characters".into());
    }
    if !s
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(
            "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".into(),
        );
    }
    if s.starts_with('-') || s.ends_with('-') || s.contains("--") {
        return Err("must not begin or end with a hyphen, nor contain adjacent hyphens".into());
    }
    if !s.chars().any(|c| c.is_ascii_lowercase()) {
        return Err("must contain at least one letter (a-z)".into());
    }
    Ok(())
}

/// A ConfigMap or Secret key: `[-._a-zA-Z0-9]+`, at most 253 characters, not `.` or `..`.
pub fn config_map_key(s: &str) -> Result<(), String> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if s.is_empty() || s.len() > 253 || !s.chars().all(ok) || s == "." || s == ".." {
        return Err(
            "a valid config key must consist of alphanumeric characters, '-', '_' or '.'".into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        for ok in ["a", "echo", "web-1", "0abc"] {
            assert!(dns1123_label(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Echo", "-a", "a-", "a_b", "a.b", &"x".repeat(64)] {
            assert!(dns1123_label(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn subdomains() {
        assert!(dns1123_subdomain("app.example-1").is_ok());
        assert!(dns1123_subdomain("app..x").is_err());
        assert!(dns1123_subdomain("App").is_err());
    }

    #[test]
    fn port_names() {
        assert!(iana_svc_name("http").is_ok());
        assert!(iana_svc_name("http-alt").is_ok());
        for bad in ["", "8080", "a--b", "-a", "averyveryverylongname", "HTTP"] {
            assert!(iana_svc_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn config_keys() {
        assert!(config_map_key("nginx.conf").is_ok());
        assert!(config_map_key("..").is_err());
        assert!(config_map_key("a/b").is_err());
    }
}
