//! Lua 5.4 patterns, matched in Rust under a step budget. Lua's own matcher (lstrlib.c)
//! backtracks in C, where the instruction hook never runs: `("a"):rep(40):find(("a*"):rep(40).."b")`
//! runs for longer than the universe. This is the same algorithm, step for step (same
//! results, same error messages), counting each step against the script's instruction budget.

/// Lua's limits: captures per pattern, and nesting of the matcher's recursion.
const MAX_CAPTURES: usize = 32;
const MAX_DEPTH: u32 = 200;
const ESC: u8 = b'%';

/// A capture's length while it is open, and the length of a position capture `()`.
const CAP_UNFINISHED: isize = -1;
const CAP_POSITION: isize = -2;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PatternError {
    /// The step budget ran out.
    Budget,
    /// The call's wall-clock deadline passed.
    Time,
    /// A malformed pattern or a bad capture reference, with Lua's message.
    Bad(String),
}

fn bad<T>(msg: impl Into<String>) -> Result<T, PatternError> {
    Err(PatternError::Bad(msg.into()))
}

/// A capture: where it starts and its length (or `CAP_POSITION`).
#[derive(Clone, Copy)]
pub(crate) struct Capture {
    pub init: usize,
    pub len: isize,
}

/// One capture's value, as Lua gets it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Captured<'s> {
    Text(&'s [u8]),
    /// A position capture: 1-based.
    Position(usize),
}

pub(crate) struct Matcher<'a> {
    src: &'a [u8],
    pat: &'a [u8],
    pub level: usize,
    pub capture: [Capture; MAX_CAPTURES],
    depth: u32,
    /// Steps left; every step of the matcher takes one.
    pub steps: u64,
    /// The call's wall-clock deadline, looked at every `CLOCK_EVERY` steps.
    deadline: Option<std::time::Instant>,
}

const CLOCK_EVERY: u64 = 1 << 16;

impl<'a> Matcher<'a> {
    pub(crate) fn new(src: &'a [u8], pat: &'a [u8], steps: u64) -> Matcher<'a> {
        Matcher { src, pat, level: 0, capture: [Capture { init: 0, len: 0 }; MAX_CAPTURES], depth: MAX_DEPTH, steps, deadline: None }
    }

    /// A match found earlier (its captures kept), to read its captures from.
    pub(crate) fn found(src: &'a [u8], pat: &'a [u8], level: usize, capture: [Capture; MAX_CAPTURES]) -> Matcher<'a> {
        Matcher { level, capture, ..Matcher::new(src, pat, 0) }
    }

    /// Also stops at `deadline`.
    pub(crate) fn until(mut self, deadline: Option<std::time::Instant>) -> Matcher<'a> {
        self.deadline = deadline;
        self
    }

    /// Ready for a new attempt at another position.
    pub(crate) fn reset(&mut self) {
        self.level = 0;
        self.depth = MAX_DEPTH;
    }

    fn step(&mut self) -> Result<(), PatternError> {
        if self.steps == 0 {
            return Err(PatternError::Budget);
        }
        self.steps -= 1;
        if self.steps.is_multiple_of(CLOCK_EVERY) && self.deadline.is_some_and(|d| std::time::Instant::now() > d) {
            return Err(PatternError::Time);
        }
        Ok(())
    }

    /// The pattern byte at `p`, or 0 past its end (as C reads the terminator).
    fn p(&self, p: usize) -> u8 {
        self.pat.get(p).copied().unwrap_or(0)
    }

    fn class_end(&self, mut p: usize) -> Result<usize, PatternError> {
        let c = self.p(p);
        p += 1;
        match c {
            ESC => {
                if p >= self.pat.len() {
                    return bad("malformed pattern (ends with '%')");
                }
                Ok(p + 1)
            }
            b'[' => {
                if self.p(p) == b'^' {
                    p += 1;
                }
                loop {
                    if p >= self.pat.len() {
                        return bad("malformed pattern (missing ']')");
                    }
                    let c = self.pat[p];
                    p += 1;
                    if c == ESC && p < self.pat.len() {
                        p += 1;
                    }
                    if self.p(p) == b']' && p < self.pat.len() {
                        break;
                    }
                }
                Ok(p + 1)
            }
            _ => Ok(p),
        }
    }

    fn single_match(&self, s: usize, p: usize, ep: usize) -> bool {
        let Some(&c) = self.src.get(s) else {
            return false;
        };
        match self.p(p) {
            b'.' => true,
            ESC => match_class(c, self.p(p + 1)),
            b'[' => self.match_bracket_class(c, p, ep - 1),
            pc => pc == c,
        }
    }

    /// `p` is at `[`, `ec` at the closing `]`.
    fn match_bracket_class(&self, c: u8, mut p: usize, ec: usize) -> bool {
        let mut sig = true;
        if self.p(p + 1) == b'^' {
            sig = false;
            p += 1;
        }
        loop {
            p += 1;
            if p >= ec {
                break;
            }
            if self.p(p) == ESC {
                p += 1;
                if match_class(c, self.p(p)) {
                    return sig;
                }
            } else if self.p(p + 1) == b'-' && p + 2 < ec {
                p += 2;
                if self.p(p - 2) <= c && c <= self.p(p) {
                    return sig;
                }
            } else if self.p(p) == c {
                return sig;
            }
        }
        !sig
    }

    /// Matches the pattern from `p` against the subject from `s`; the end of the match.
    pub(crate) fn do_match(&mut self, mut s: usize, mut p: usize) -> Result<Option<usize>, PatternError> {
        if self.depth == 0 {
            return bad("pattern too complex");
        }
        self.depth -= 1;
        let r = loop {
            self.step()?;
            if p >= self.pat.len() {
                break Some(s);
            }
            match self.pat[p] {
                b'(' => {
                    break if self.p(p + 1) == b')' { self.start_capture(s, p + 2, CAP_POSITION)? } else { self.start_capture(s, p + 1, CAP_UNFINISHED)? };
                }
                b')' => break self.end_capture(s, p + 1)?,
                b'$' if p + 1 == self.pat.len() => break (s == self.src.len()).then_some(s),
                ESC if self.p(p + 1) == b'b' => match self.match_balance(s, p + 2)? {
                    Some(e) => {
                        s = e;
                        p += 4;
                    }
                    None => break None,
                },
                ESC if self.p(p + 1) == b'f' => {
                    p += 2;
                    if self.p(p) != b'[' {
                        return bad("missing '[' after '%f' in pattern");
                    }
                    let ep = self.class_end(p)?;
                    let previous = if s == 0 { 0 } else { self.src[s - 1] };
                    let current = self.src.get(s).copied().unwrap_or(0);
                    if !self.match_bracket_class(previous, p, ep - 1) && self.match_bracket_class(current, p, ep - 1) {
                        p = ep;
                    } else {
                        break None;
                    }
                }
                ESC if self.p(p + 1).is_ascii_digit() => match self.match_capture(s, self.p(p + 1))? {
                    Some(e) => {
                        s = e;
                        p += 2;
                    }
                    None => break None,
                },
                _ => {
                    let ep = self.class_end(p)?;
                    let suffix = self.p(ep);
                    if !self.single_match(s, p, ep) {
                        if matches!(suffix, b'*' | b'?' | b'-') {
                            p = ep + 1;
                            continue;
                        }
                        break None;
                    }
                    match suffix {
                        b'?' => match self.do_match(s + 1, ep + 1)? {
                            Some(e) => break Some(e),
                            None => p = ep + 1,
                        },
                        b'+' => break self.max_expand(s + 1, p, ep)?,
                        b'*' => break self.max_expand(s, p, ep)?,
                        b'-' => break self.min_expand(s, p, ep)?,
                        _ => {
                            s += 1;
                            p = ep;
                        }
                    }
                }
            }
        };
        self.depth += 1;
        Ok(r)
    }

    fn max_expand(&mut self, s: usize, p: usize, ep: usize) -> Result<Option<usize>, PatternError> {
        let mut i = 0;
        while self.single_match(s + i, p, ep) {
            self.step()?;
            i += 1;
        }
        loop {
            if let Some(e) = self.do_match(s + i, ep + 1)? {
                return Ok(Some(e));
            }
            if i == 0 {
                return Ok(None);
            }
            i -= 1;
        }
    }

    fn min_expand(&mut self, mut s: usize, p: usize, ep: usize) -> Result<Option<usize>, PatternError> {
        loop {
            if let Some(e) = self.do_match(s, ep + 1)? {
                return Ok(Some(e));
            }
            if self.single_match(s, p, ep) {
                s += 1;
            } else {
                return Ok(None);
            }
        }
    }

    fn start_capture(&mut self, s: usize, p: usize, what: isize) -> Result<Option<usize>, PatternError> {
        if self.level >= MAX_CAPTURES {
            return bad("too many captures");
        }
        self.capture[self.level] = Capture { init: s, len: what };
        self.level += 1;
        let r = self.do_match(s, p)?;
        if r.is_none() {
            self.level -= 1;
        }
        Ok(r)
    }

    fn end_capture(&mut self, s: usize, p: usize) -> Result<Option<usize>, PatternError> {
        let Some(l) = (0..self.level).rev().find(|&l| self.capture[l].len == CAP_UNFINISHED) else {
            return bad("invalid pattern capture");
        };
        self.capture[l].len = (s - self.capture[l].init) as isize;
        let r = self.do_match(s, p)?;
        if r.is_none() {
            self.capture[l].len = CAP_UNFINISHED;
        }
        Ok(r)
    }

    fn match_capture(&mut self, s: usize, digit: u8) -> Result<Option<usize>, PatternError> {
        let l = digit as isize - b'1' as isize;
        if l < 0 || l as usize >= self.level || self.capture[l as usize].len == CAP_UNFINISHED {
            return bad(format!("invalid capture index %{}", l + 1));
        }
        let c = self.capture[l as usize];
        if c.len < 0 {
            return Ok(None); // a position capture has no text to repeat
        }
        let len = c.len as usize;
        self.steps = self.steps.saturating_sub(len as u64 / 64);
        Ok((self.src.len() - s >= len && self.src[c.init..c.init + len] == self.src[s..s + len]).then_some(s + len))
    }

    fn match_balance(&mut self, s: usize, p: usize) -> Result<Option<usize>, PatternError> {
        if p + 1 >= self.pat.len() {
            return bad("malformed pattern (missing arguments to '%b')");
        }
        let (open, close) = (self.pat[p], self.pat[p + 1]);
        if self.src.get(s) != Some(&open) {
            return Ok(None);
        }
        let mut depth = 1;
        let mut i = s + 1;
        while i < self.src.len() {
            self.step()?;
            let c = self.src[i];
            if c == close {
                depth -= 1;
                if depth == 0 {
                    return Ok(Some(i + 1));
                }
            } else if c == open {
                depth += 1;
            }
            i += 1;
        }
        Ok(None)
    }

    /// Capture `i` of a match `s..e` (capture 0 of a pattern without captures is the match).
    pub(crate) fn get_capture(&self, i: usize, s: usize, e: usize) -> Result<Captured<'a>, PatternError> {
        if i >= self.level {
            if i != 0 {
                return bad(format!("invalid capture index %{}", i + 1));
            }
            return Ok(Captured::Text(&self.src[s..e]));
        }
        let c = self.capture[i];
        match c.len {
            CAP_UNFINISHED => bad("unfinished capture"),
            CAP_POSITION => Ok(Captured::Position(c.init + 1)),
            len => Ok(Captured::Text(&self.src[c.init..c.init + len as usize])),
        }
    }

    /// How many values a match gives: its captures, or the whole match when it has none.
    pub(crate) fn capture_count(&self, whole: bool) -> usize {
        if self.level == 0 && whole {
            1
        } else {
            self.level
        }
    }
}

/// `%a`, `%d`, … (an upper-case class is the complement); any other byte stands for itself.
fn match_class(c: u8, class: u8) -> bool {
    let m = match class.to_ascii_lowercase() {
        b'a' => c.is_ascii_alphabetic(),
        b'c' => c.is_ascii_control(),
        b'd' => c.is_ascii_digit(),
        b'g' => c.is_ascii_graphic(),
        b'l' => c.is_ascii_lowercase(),
        b'p' => c.is_ascii_punctuation(),
        // C's isspace: includes the vertical tab, which Rust's is_ascii_whitespace does not.
        b's' => matches!(c, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r'),
        b'u' => c.is_ascii_uppercase(),
        b'w' => c.is_ascii_alphanumeric(),
        b'x' => c.is_ascii_hexdigit(),
        // Deprecated in Lua 5.2, still understood by 5.4.
        b'z' => c == 0,
        _ => return class == c,
    };
    if class.is_ascii_uppercase() {
        !m
    } else {
        m
    }
}

/// Whether a pattern has none of the special characters (`find` then searches plainly).
pub(crate) fn no_specials(p: &[u8]) -> bool {
    !p.iter().any(|c| b"^$*+?.([%-".contains(c))
}

/// A plain search for `needle` in `hay`, counting one step per byte compared.
pub(crate) fn find_plain(hay: &[u8], needle: &[u8], steps: &mut u64) -> Result<Option<usize>, PatternError> {
    if needle.is_empty() {
        return Ok(Some(0));
    }
    if needle.len() > hay.len() {
        return Ok(None);
    }
    for start in 0..=hay.len() - needle.len() {
        let cost = 1 + if hay[start] == needle[0] { needle.len() as u64 } else { 0 };
        if *steps < cost {
            return Err(PatternError::Budget);
        }
        *steps -= cost;
        if hay[start..start + needle.len()] == *needle {
            return Ok(Some(start));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `string.find` without captures: the 1-based bounds of the first match.
    fn find(s: &str, p: &str) -> Result<Option<(usize, usize)>, PatternError> {
        let (anchor, pat) = match p.strip_prefix('^') {
            Some(rest) => (true, rest),
            None => (false, p),
        };
        let mut m = Matcher::new(s.as_bytes(), pat.as_bytes(), 1_000_000);
        let mut at = 0;
        loop {
            m.reset();
            if let Some(e) = m.do_match(at, 0)? {
                return Ok(Some((at + 1, e)));
            }
            at += 1;
            if anchor || at > s.len() {
                return Ok(None);
            }
        }
    }

    #[test]
    fn matches_as_lua_does() {
        assert_eq!(find("hello world", "o w"), Ok(Some((5, 7))));
        assert_eq!(find("hello", "l+"), Ok(Some((3, 4))));
        assert_eq!(find("hello", "^h.-o$"), Ok(Some((1, 5))));
        assert_eq!(find("hello", "^e"), Ok(None));
        assert_eq!(find("x = (a(b)c)", "%b()"), Ok(Some((5, 11))));
        assert_eq!(find("THE (quick) fox", "%f[%a]%a+"), Ok(Some((1, 3))));
        assert_eq!(find("key=val", "(%w+)=(%w+)"), Ok(Some((1, 7))));
        assert_eq!(find("abab", "(ab)%1"), Ok(Some((1, 4))));
        assert_eq!(find("a.b", "[.]"), Ok(Some((2, 2))));
        assert_eq!(find("a]b", "[]]"), Ok(Some((2, 2))));
        assert_eq!(find("a-b", "[a%-]+"), Ok(Some((1, 2))));
        assert_eq!(find("\x0b", "%s"), Ok(Some((1, 1))));
        assert_eq!(find("", ""), Ok(Some((1, 0))));
        assert_eq!(find("abc", "b?c"), Ok(Some((2, 3))));
    }

    #[test]
    fn malformed_patterns_give_lua_messages() {
        assert_eq!(find("a", "%"), Err(PatternError::Bad("malformed pattern (ends with '%')".into())));
        assert_eq!(find("a", "[a"), Err(PatternError::Bad("malformed pattern (missing ']')".into())));
        assert_eq!(find("a", "a)"), Err(PatternError::Bad("invalid pattern capture".into())));
        assert_eq!(find("a", "%1"), Err(PatternError::Bad("invalid capture index %1".into())));
        assert_eq!(find("a", "%f"), Err(PatternError::Bad("missing '[' after '%f' in pattern".into())));
        assert_eq!(find("a", "%b"), Err(PatternError::Bad("malformed pattern (missing arguments to '%b')".into())));
    }

    #[test]
    fn catastrophic_backtracking_runs_out_of_steps() {
        let s = "a".repeat(40);
        let p = format!("{}b", "a*".repeat(40));
        assert_eq!(find(&s, &p), Err(PatternError::Budget));
    }
}
