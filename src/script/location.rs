//! Where a Lua error happened, as `file.lua:12`: read from the error's text (traces, the
//! console's last error per script).

/// `file.lua:12` from an error's first line (`file.lua:12: message`), if it names one.
pub(crate) fn error_location(message: &str) -> Option<String> {
    let first = message.lines().next()?;
    // The first `<name>.lua:<digits>:` of the line (a chunk is named after its file).
    let mut from = 0;
    while let Some(i) = first[from..].find(".lua:") {
        let end = from + i + 5;
        let digits: String = first[end..].chars().take_while(char::is_ascii_digit).collect();
        if !digits.is_empty() {
            let start = first[..from + i].rfind(|c: char| c.is_whitespace() || c == '"' || c == '(' || c == '[').map_or(0, |s| s + 1);
            return Some(format!("{}:{digits}", &first[start..from + i + 4]));
        }
        from = end;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_errors_location_is_its_files_line() {
        assert_eq!(error_location("failing.lua:3: boom").as_deref(), Some("failing.lua:3"));
        assert_eq!(error_location("runtime error: [string \"x\"]: a.lua:12: attempt to index a nil value\nstack").as_deref(), Some("a.lua:12"));
        assert_eq!(error_location("time limit exceeded"), None);
        assert_eq!(error_location("my.lua.lua:x then b.lua:7: no").as_deref(), Some("b.lua:7"));
    }
}
