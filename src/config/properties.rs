//! Java `.properties` files, read exactly as `java.util.Properties.load(InputStream)` reads them.
//!
//! The `java-properties` crate does the parsing (separators, comments, continuations, escapes). Two inputs
//! where it differs from Java are normalised first (crates.md §6):
//! * a dangling backslash at the end of the file: Java keeps the entry (`a=1\` gives `a=1`), the crate
//!   would drop it;
//! * escaped UTF-16 surrogate pairs (`\uD83D\uDE00`): Java joins them into one character, the crate
//!   rejects them. A lone escaped surrogate becomes U+FFFD.
//!
//! Files are ISO-8859-1, as in Java: every byte is one character, and other characters must be written
//! as `\uXXXX` escapes.

use std::collections::BTreeMap;
use std::path::Path;

/// The key/value pairs of one file; the last of duplicate keys wins, as in Java.
pub type Properties = BTreeMap<String, String>;

#[derive(Debug, thiserror::Error)]
pub enum PropertiesError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Syntax {
        path: String,
        line: usize,
        message: String,
    },
}

/// Reads and parses a properties file.
pub fn load_file(path: &Path) -> Result<Properties, PropertiesError> {
    let bytes = std::fs::read(path).map_err(|source| PropertiesError::Io {
        path: path.display().to_string(),
        source,
    })?;
    parse(&bytes).map_err(|(line, message)| PropertiesError::Syntax {
        path: path.display().to_string(),
        line,
        message,
    })
}

/// Parses properties from ISO-8859-1 bytes. The error carries a line number (1-based) and a message.
pub fn parse(bytes: &[u8]) -> Result<Properties, (usize, String)> {
    // ISO-8859-1: byte n is U+00nn.
    let text: String = bytes.iter().map(|&b| b as char).collect();
    let text = join_surrogate_escapes(&strip_dangling_backslash(&text));
    let mut props = Properties::new();
    java_properties::PropertiesIter::new_with_encoding(text.as_bytes(), encoding_rs::UTF_8)
        .read_into(|k, v| {
            props.insert(k, v);
        })
        .map_err(|e| {
            (
                e.line_number().unwrap_or(0),
                e.to_string()
                    .trim_end_matches(|c: char| c.is_ascii_digit() || c == ' ')
                    .to_string(),
            )
        })?;
    Ok(props)
}

/// `a=1\` at the very end (optionally followed by line terminators) is `a=1` in Java.
fn strip_dangling_backslash(text: &str) -> String {
    let body = text.trim_end_matches(['\n', '\r']);
    let last_line = body.rsplit(['\n', '\r']).next().unwrap_or("");
    let trailing = last_line.chars().rev().take_while(|&c| c == '\\').count();
    if trailing % 2 == 1 && !is_comment(last_line) {
        body[..body.len() - 1].to_string()
    } else {
        text.to_string()
    }
}

fn is_comment(line: &str) -> bool {
    matches!(
        line.trim_start_matches([' ', '\t', '\x0c']).chars().next(),
        Some('#') | Some('!')
    )
}

/// Replaces `\uD8xx\uDCxx` (an escaped surrogate pair) with the character it encodes, and a lone
/// escaped surrogate with U+FFFD. Escaped backslashes (`\\uD83D`) are left alone.
fn join_surrogate_escapes(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let hex_at = |i: usize| -> Option<u32> {
        if i + 6 <= chars.len() && chars[i] == '\\' && chars[i + 1] == 'u' {
            let s: String = chars[i + 2..i + 6].iter().collect();
            u32::from_str_radix(&s, 16).ok()
        } else {
            None
        }
    };
    while i < chars.len() {
        if chars[i] == '\\' {
            if let Some(hi) = hex_at(i) {
                if (0xD800..0xDC00).contains(&hi) {
                    if let Some(lo) = hex_at(i + 6).filter(|lo| (0xDC00..0xE000).contains(lo)) {
                        let c = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                        out.push(char::from_u32(c).unwrap_or('\u{FFFD}'));
                        i += 12;
                        continue;
                    }
                    out.push('\u{FFFD}');
                    i += 6;
                    continue;
                }
                if (0xDC00..0xE000).contains(&hi) {
                    out.push('\u{FFFD}');
                    i += 6;
                    continue;
                }
            }
            // Any other escape: copy the backslash and the escaped character unchanged.
            out.push('\\');
            if i + 1 < chars.len() {
                out.push(chars[i + 1]);
            }
            i += 2;
            continue;
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &[u8]) -> Properties {
        parse(s).unwrap()
    }

    // Expected values below are what Java 17's Properties.load(InputStream) returns for the same bytes.
    #[test]
    fn separators_and_whitespace() {
        let r = p(b"a=1\nb:2\nc 3\n  d  =  4  \ne\t=\t5\nf\n");
        assert_eq!(r["a"], "1");
        assert_eq!(r["b"], "2");
        assert_eq!(r["c"], "3");
        assert_eq!(r["d"], "4  "); // leading whitespace of the value stripped, trailing kept
        assert_eq!(r["e"], "5");
        assert_eq!(r["f"], "");
    }

    #[test]
    fn comments_and_continuations() {
        let r = p(b"# c\n  ! c2\nk=v # not a comment\nmulti=first \\\n    second \\\n  third\n#x\\\ny=1\n");
        assert_eq!(r["k"], "v # not a comment");
        assert_eq!(r["multi"], "first second third");
        assert_eq!(r["y"], "1"); // a comment line is never continued
        assert_eq!(r.len(), 3);
    }

    #[test]
    fn escapes() {
        let r = p(b"k\\ with\\ spaces=v\\=1\\:x\ntab=a\\tb\nu=caf\\u00e9\nunknown=\\b\n");
        assert_eq!(r["k with spaces"], "v=1:x");
        assert_eq!(r["tab"], "a\tb");
        assert_eq!(r["u"], "café");
        assert_eq!(r["unknown"], "b");
    }

    #[test]
    fn iso_8859_1_bytes() {
        // UTF-8 "é" is two bytes; Java reads them as two Latin-1 characters.
        let r = p("x=café\n".as_bytes());
        assert_eq!(r["x"], "cafÃ©");
        let r = p(b"x=caf\xe9\n");
        assert_eq!(r["x"], "café");
    }

    #[test]
    fn dangling_backslash_at_eof() {
        assert_eq!(p(b"a=1\\")["a"], "1");
        assert_eq!(p(b"a=1\\\n")["a"], "1");
        assert_eq!(p(b"a=1\\\\")["a"], "1\\"); // escaped backslash: not dangling
        assert_eq!(p(b"b=2\n#c\\")["b"], "2");
    }

    #[test]
    fn surrogate_pairs() {
        assert_eq!(p(b"e=\\uD83D\\uDE00!")["e"], "\u{1F600}!");
        assert_eq!(p(b"e=\\uD83Dx")["e"], "\u{FFFD}x");
        assert_eq!(p(b"e=\\\\uD83D")["e"], "\\uD83D");
    }

    #[test]
    fn crlf_and_duplicates() {
        let r = p(b"a=1\r\nb=2\rc=3\r\na=4\r\n");
        assert_eq!(r["a"], "4");
        assert_eq!(r["b"], "2");
        assert_eq!(r["c"], "3");
    }

    #[test]
    fn bad_unicode_escape_is_an_error_with_line() {
        let e = parse(b"a=1\nb=\\uZZZZ\n").unwrap_err();
        assert_eq!(e.0, 2);
    }
}
