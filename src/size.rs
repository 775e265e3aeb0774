//! Sizes on the command line, read by `parse-size`: `65536`, `64KiB`,
//! `64MiB`, `1GiB` (powers of 1024), `64K`, `64MB` (powers of 1000).

/// Parses a size of at least `min` bytes that fits in memory.
pub fn parse_at_least(text: &str, min: usize) -> Result<usize, String> {
    let bytes = parse_size::parse_size(text.trim())
        .map_err(|_| "not a size (e.g. 65536, 512KiB, 64MiB, 1GiB)".to_owned())?;
    let bytes = usize::try_from(bytes).map_err(|_| "too large".to_owned())?;
    if bytes < min {
        return Err(format!("must be at least {}", human(min)));
    }
    Ok(bytes)
}

/// `64KiB` for 65536: the largest binary unit that divides the size.
fn human(bytes: usize) -> String {
    for (unit, size) in [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if bytes >= size && bytes.is_multiple_of(size) {
            return format!("{}{unit}", bytes / size);
        }
    }
    format!("{bytes} bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_plain_and_suffixed_sizes() {
        assert_eq!(parse_at_least("65536", 1), Ok(65536));
        assert_eq!(parse_at_least("64KiB", 1), Ok(64 << 10));
        assert_eq!(parse_at_least("64MiB", 1), Ok(64 << 20));
        assert_eq!(parse_at_least("1GiB", 1), Ok(1 << 30));
        assert_eq!(parse_at_least("64M", 1), Ok(64_000_000));
    }

    #[test]
    fn refuses_small_and_nonsense_sizes_with_a_reason() {
        assert_eq!(
            parse_at_least("1000", 64 << 10),
            Err("must be at least 64KiB".to_owned())
        );
        assert!(parse_at_least("0", 1).is_err());
        assert!(
            parse_at_least("lots", 1)
                .unwrap_err()
                .contains("not a size")
        );
    }
}
