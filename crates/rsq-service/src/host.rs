//! The machine's hostname, as daemons report it in `/info`, IDENTIFY and
//! as their default broadcast address.

/// The machine's hostname: the kernel's, else `$HOSTNAME`, else `localhost`.
pub fn hostname() -> String {
    choose_hostname(
        std::fs::read_to_string("/proc/sys/kernel/hostname").ok(),
        std::env::var("HOSTNAME").ok(),
    )
}

/// The first usable name: the kernel's (trimmed, if not empty), else the
/// environment's, else `localhost`.
fn choose_hostname(kernel: Option<String>, env: Option<String>) -> String {
    kernel
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or(env)
        .unwrap_or_else(|| "localhost".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(kernel: Option<&str>, env: Option<&str>, expected: &str) {
        assert_eq!(
            choose_hostname(kernel.map(String::from), env.map(String::from)),
            expected
        );
    }

    #[test]
    fn kernel_then_env_then_localhost() {
        check(Some("box1\n"), Some("env1"), "box1");
        check(Some("  box2  "), None, "box2");
        check(Some("\n"), Some("env1"), "env1");
        check(None, Some("env1"), "env1");
        check(Some(""), None, "localhost");
        check(None, None, "localhost");
    }

    #[test]
    fn this_machine_has_a_trimmed_name() {
        let name = hostname();
        assert!(!name.is_empty());
        assert_eq!(name.trim(), name);
    }
}
