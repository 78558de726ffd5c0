//! A small, strict JSON reader and a Go-compatible JSON writer for the runc
//! wire. Sans-IO, no dependencies.
//!
//! Reading takes two passes and builds no tree. [`check`] validates one
//! whole record without allocating: it rejects anything RFC 8259 rejects,
//! caps nesting at a fixed depth and refuses lone surrogates. Then [`Raw`]
//! values point into the checked text: the mapping layer walks only the
//! objects and arrays the message uses and decodes only the strings and
//! numbers it keeps, so values it does not use (unknown keys, whatever their
//! shape) cost nothing. Numbers stay literal text, so range checks are
//! exact, never through `f64`.
//!
//! The writer prints strings exactly as Go's `encoding/json` does with its
//! default HTML-safe escaping.

use std::borrow::Cow;

/// Why the reader refused the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ParseError {
    /// Not JSON (or not UTF-8, or a lone surrogate escape).
    Syntax { offset: usize, reason: &'static str },
    /// Arrays/objects nested deeper than the cap.
    TooDeep { max: usize },
}

/// Checks that `input` is exactly one JSON value (surrounding whitespace
/// allowed), nested at most `max_depth` deep; returns the value. Allocates
/// nothing; recursion is bounded by `max_depth`.
pub(crate) fn check(input: &[u8], max_depth: usize) -> Result<Raw<'_>, ParseError> {
    let text = std::str::from_utf8(input).map_err(|e| ParseError::Syntax {
        offset: e.valid_up_to(),
        reason: "invalid UTF-8",
    })?;
    let mut p = Checker {
        b: text.as_bytes(),
        i: 0,
        max_depth,
    };
    p.ws();
    let at = p.i;
    p.value(0)?;
    p.ws();
    if p.i != p.b.len() {
        return Err(p.err("trailing data after the JSON value"));
    }
    Ok(Raw { text, at })
}

/// The validating pass: walks the grammar, remembers nothing.
struct Checker<'a> {
    b: &'a [u8],
    i: usize,
    max_depth: usize,
}

impl Checker<'_> {
    fn err(&self, reason: &'static str) -> ParseError {
        ParseError::Syntax {
            offset: self.i,
            reason,
        }
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn literal(&mut self, word: &'static str) -> Result<(), ParseError> {
        if self.b[self.i..].starts_with(word.as_bytes()) {
            self.i += word.len();
            Ok(())
        } else {
            Err(self.err("invalid literal"))
        }
    }

    /// `depth` is the number of arrays/objects enclosing this value.
    fn value(&mut self, depth: usize) -> Result<(), ParseError> {
        match self.peek() {
            None => Err(self.err("unexpected end of input")),
            Some(b'{') => self.object(depth + 1),
            Some(b'[') => self.array(depth + 1),
            Some(b'"') => self.string(),
            Some(b't') => self.literal("true"),
            Some(b'f') => self.literal("false"),
            Some(b'n') => self.literal("null"),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.err("unexpected character")),
        }
    }

    fn enter(&self, depth: usize) -> Result<(), ParseError> {
        if depth > self.max_depth {
            Err(ParseError::TooDeep {
                max: self.max_depth,
            })
        } else {
            Ok(())
        }
    }

    fn object(&mut self, depth: usize) -> Result<(), ParseError> {
        self.enter(depth)?;
        self.i += 1; // '{'
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.ws();
            if self.peek() != Some(b'"') {
                return Err(self.err("expected a string key"));
            }
            self.string()?;
            self.ws();
            if self.peek() != Some(b':') {
                return Err(self.err("expected ':' after a key"));
            }
            self.i += 1;
            self.ws();
            self.value(depth)?;
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(self.err("expected ',' or '}' in an object")),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<(), ParseError> {
        self.enter(depth)?;
        self.i += 1; // '['
        self.ws();
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok(());
        }
        loop {
            self.ws();
            self.value(depth)?;
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    return Ok(());
                }
                _ => return Err(self.err("expected ',' or ']' in an array")),
            }
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
        self.i - start
    }

    fn number(&mut self) -> Result<(), ParseError> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return Err(self.err("invalid number")),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return Err(self.err("invalid number: no digits after '.'"));
            }
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if self.digits() == 0 {
                return Err(self.err("invalid number: no digits in exponent"));
            }
        }
        Ok(())
    }

    fn hex4(&mut self) -> Result<u32, ParseError> {
        let v = hex4(self.b, self.i).ok_or_else(|| self.err("invalid \\u escape"))?;
        self.i += 4;
        Ok(v)
    }

    fn string(&mut self) -> Result<(), ParseError> {
        self.i += 1; // opening quote
        loop {
            match self.peek() {
                None => return Err(self.err("unterminated string")),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(());
                }
                Some(b'\\') => {
                    self.i += 1;
                    let c = self.peek().ok_or_else(|| self.err("unterminated string"))?;
                    self.i += 1;
                    match c {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                        b'u' => {
                            let hi = self.hex4()?;
                            if (0xD800..0xDC00).contains(&hi) {
                                if self.b.get(self.i..self.i + 2) != Some(b"\\u") {
                                    return Err(self.err("lone surrogate in \\u escape"));
                                }
                                self.i += 2;
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return Err(self.err("lone surrogate in \\u escape"));
                                }
                            } else if (0xDC00..0xE000).contains(&hi) {
                                return Err(self.err("lone surrogate in \\u escape"));
                            }
                        }
                        _ => return Err(self.err("invalid escape")),
                    }
                }
                Some(c) if c < 0x20 => return Err(self.err("control character in string")),
                Some(_) => self.i += 1,
            }
        }
    }
}

/// Four hex digits at `b[i..]`, or `None`.
fn hex4(b: &[u8], i: usize) -> Option<u32> {
    let h = b.get(i..i + 4)?;
    let mut v = 0u32;
    for &c in h {
        v = v * 16 + (c as char).to_digit(16)?;
    }
    Some(v)
}

/// The JSON type of a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Null,
    Bool,
    Number,
    String,
    Array,
    Object,
}

/// One value of a record [`check`] accepted: a position in its text. Every
/// accessor reads the text afresh; nothing is cached or allocated except
/// the decoded text of an escaped string or key.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Raw<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Raw<'a> {
    fn byte(&self, i: usize) -> u8 {
        self.text.as_bytes().get(i).copied().unwrap_or(0)
    }

    /// The value's JSON type.
    pub(crate) fn kind(&self) -> Kind {
        match self.byte(self.at) {
            b'{' => Kind::Object,
            b'[' => Kind::Array,
            b'"' => Kind::String,
            b't' | b'f' => Kind::Bool,
            b'n' => Kind::Null,
            _ => Kind::Number,
        }
    }

    /// The JSON type name, for error messages.
    pub(crate) fn type_name(&self) -> &'static str {
        match self.kind() {
            Kind::Null => "null",
            Kind::Bool => "bool",
            Kind::Number => "number",
            Kind::String => "string",
            Kind::Array => "array",
            Kind::Object => "object",
        }
    }

    /// A `true`/`false` literal.
    pub(crate) fn as_bool(&self) -> Option<bool> {
        match self.byte(self.at) {
            b't' => Some(true),
            b'f' => Some(false),
            _ => None,
        }
    }

    /// A number's literal text.
    pub(crate) fn as_number(&self) -> Option<&'a str> {
        if self.kind() != Kind::Number {
            return None;
        }
        let end = skip(self.text.as_bytes(), self.at);
        self.text.get(self.at..end)
    }

    /// A string's decoded text: borrowed unless it holds escapes.
    pub(crate) fn as_string(&self) -> Option<Cow<'a, str>> {
        if self.kind() != Kind::String {
            return None;
        }
        Some(read_string(self.text, self.at).0)
    }

    /// An object's members in record order (duplicates kept).
    pub(crate) fn members(&self) -> Members<'a> {
        Members(Seq::open(self.text, self.at, b'{'))
    }

    /// An array's items in record order.
    pub(crate) fn items(&self) -> Items<'a> {
        Items(Seq::open(self.text, self.at, b'['))
    }
}

/// Where the next member/item of an object/array starts, or `None` at its end.
struct Seq<'a> {
    text: &'a str,
    next: Option<usize>,
}

impl<'a> Seq<'a> {
    fn open(text: &'a str, at: usize, open: u8) -> Self {
        let b = text.as_bytes();
        let next = if b.get(at) == Some(&open) {
            let i = ws(b, at + 1);
            match b.get(i) {
                Some(b']' | b'}') | None => None,
                Some(_) => Some(i),
            }
        } else {
            None
        };
        Seq { text, next }
    }

    /// Moves past the value at `i` and the separator after it.
    fn after(&mut self, i: usize) {
        let b = self.text.as_bytes();
        let j = ws(b, skip(b, i));
        self.next = match b.get(j) {
            Some(b',') => Some(ws(b, j + 1)),
            _ => None,
        };
    }
}

/// The members of an object: `(key, value)`.
pub(crate) struct Members<'a>(Seq<'a>);

impl<'a> Iterator for Members<'a> {
    type Item = (Cow<'a, str>, Raw<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        let i = self.0.next?;
        let text = self.0.text;
        let b = text.as_bytes();
        let (key, end) = read_string(text, i);
        // Past the ':'.
        let at = ws(b, ws(b, end) + 1);
        self.0.after(at);
        Some((key, Raw { text, at }))
    }
}

/// The items of an array.
pub(crate) struct Items<'a>(Seq<'a>);

impl<'a> Iterator for Items<'a> {
    type Item = Raw<'a>;

    fn next(&mut self) -> Option<Self::Item> {
        let at = self.0.next?;
        self.0.after(at);
        Some(Raw {
            text: self.0.text,
            at,
        })
    }
}

fn ws(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = b.get(i) {
        i += 1;
    }
    i
}

/// The index just past the (checked) value starting at `i`. Iterative, so
/// it needs no stack whatever the nesting.
fn skip(b: &[u8], i: usize) -> usize {
    match b.get(i) {
        Some(b'"') => string_end(b, i),
        Some(b'{' | b'[') => {
            let mut depth = 0usize;
            let mut j = i;
            while let Some(&c) = b.get(j) {
                match c {
                    b'"' => {
                        j = string_end(b, j);
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return j + 1;
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            j
        }
        _ => {
            let mut j = i;
            while let Some(b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z' | b'+' | b'-' | b'.') = b.get(j)
            {
                j += 1;
            }
            j
        }
    }
}

/// The index just past the closing quote of the string starting at `i`.
fn string_end(b: &[u8], i: usize) -> usize {
    let mut j = i + 1;
    while let Some(&c) = b.get(j) {
        match c {
            b'"' => return j + 1,
            b'\\' => j += 2,
            _ => j += 1,
        }
    }
    j
}

/// Decodes the (checked) string starting at `i`; returns it and the index
/// past its closing quote.
fn read_string(text: &str, i: usize) -> (Cow<'_, str>, usize) {
    let b = text.as_bytes();
    let start = i + 1;
    let mut j = start;
    // Fast path: no escapes.
    while let Some(&c) = b.get(j) {
        match c {
            b'"' => return (Cow::Borrowed(text.get(start..j).unwrap_or("")), j + 1),
            b'\\' => break,
            _ => j += 1,
        }
    }
    let end = string_end(b, i);
    let mut out = String::with_capacity(end.saturating_sub(start));
    out.push_str(text.get(start..j).unwrap_or(""));
    while j < end.saturating_sub(1) {
        let c = b[j];
        if c != b'\\' {
            // Copy the run up to the next backslash or the closing quote.
            let run = j;
            while j < end - 1 && b[j] != b'\\' {
                j += 1;
            }
            out.push_str(text.get(run..j).unwrap_or(""));
            continue;
        }
        let e = b.get(j + 1).copied().unwrap_or(b'"');
        j += 2;
        match e {
            b'b' => out.push('\u{8}'),
            b'f' => out.push('\u{c}'),
            b'n' => out.push('\n'),
            b'r' => out.push('\r'),
            b't' => out.push('\t'),
            b'u' => {
                let hi = hex4(b, j).unwrap_or(0xFFFD);
                j += 4;
                let cp = if (0xD800..0xDC00).contains(&hi) {
                    let lo = hex4(b, j + 2).unwrap_or(0xDC00);
                    j += 6;
                    0x10000 + ((hi - 0xD800) << 10) + (lo.wrapping_sub(0xDC00) & 0x3ff)
                } else {
                    hi
                };
                out.push(char::from_u32(cp).unwrap_or('\u{FFFD}'));
            }
            // '"', '\\' and '/' stand for themselves.
            other => out.push(char::from(other)),
        }
    }
    (Cow::Owned(out), end)
}

/// Appends `s` as a JSON string exactly as Go's `encoding/json` prints it:
/// `"` and `\` escaped, `\b \f \n \r \t` in short form, other control
/// characters as `\u00xx`, and the HTML-sensitive `<`, `>`, `&`, U+2028 and
/// U+2029 as `\u` escapes (Go's default `SetEscapeHTML(true)`).
pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let esc: Option<&[u8]> = match c {
            b'"' => Some(b"\\\""),
            b'\\' => Some(b"\\\\"),
            b'\n' => Some(b"\\n"),
            b'\r' => Some(b"\\r"),
            b'\t' => Some(b"\\t"),
            0x08 => Some(b"\\b"),
            0x0c => Some(b"\\f"),
            _ => None,
        };
        if let Some(e) = esc {
            out.extend_from_slice(&bytes[start..i]);
            out.extend_from_slice(e);
            i += 1;
            start = i;
        } else if c < 0x20 || c == b'<' || c == b'>' || c == b'&' {
            out.extend_from_slice(&bytes[start..i]);
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(c >> 4)]);
            out.push(HEX[usize::from(c & 0xf)]);
            i += 1;
            start = i;
        } else if c == 0xE2
            && bytes.get(i + 1) == Some(&0x80)
            && matches!(bytes.get(i + 2), Some(0xA8 | 0xA9))
        {
            // U+2028 LINE SEPARATOR / U+2029 PARAGRAPH SEPARATOR.
            out.extend_from_slice(&bytes[start..i]);
            out.extend_from_slice(if bytes[i + 2] == 0xA8 {
                b"\\u2028"
            } else {
                b"\\u2029"
            });
            i += 3;
            start = i;
        } else {
            i += 1;
        }
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Appends an integer in Go's decimal form.
pub(crate) fn write_int(out: &mut Vec<u8>, v: impl std::fmt::Display) {
    use std::io::Write;
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{v}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str) -> String {
        let mut v = Vec::new();
        write_str(&mut v, s);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn go_escaping() {
        assert_eq!(w("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(
            w("\u{8}\u{c}\n\r\t\u{1}\u{1f}"),
            r#""\b\f\n\r\t\u0001\u001f""#
        );
        assert_eq!(w("<a&b>"), r#""\u003ca\u0026b\u003e""#);
        assert_eq!(
            w("x\u{2028}y\u{2029}é\u{7f}"),
            "\"x\\u2028y\\u2029é\u{7f}\""
        );
    }

    #[test]
    fn string_escapes_decode() {
        let v = check(br#"["\u00e9\ud83d\ude00\/\b\"\\x"]"#, 4).unwrap();
        let item = v.items().next().unwrap();
        assert_eq!(item.as_string().unwrap(), "é😀/\u{8}\"\\x");
        let v = check(
            br#" {"a" : [1, -0, 2.5e-3, true, null], "b\u0041":"x"} "#,
            3,
        )
        .unwrap();
        let m: Vec<_> = v.members().collect();
        assert_eq!(m.len(), 2);
        assert_eq!(m[1].0, "bA");
        let items: Vec<_> = m[0].1.items().map(|x| x.type_name()).collect();
        assert_eq!(items, ["number", "number", "number", "bool", "null"]);
        assert_eq!(m[0].1.items().nth(2).unwrap().as_number(), Some("2.5e-3"));
    }

    #[test]
    fn rejects() {
        for bad in [
            &b"{"[..],
            b"{\"a\":}",
            b"[1,]",
            b"01",
            b"1.",
            b"-",
            b"1e",
            b"\"\\ud800\"",
            b"\"\\udc00\"",
            b"\"\\ud800\\u0041\"",
            b"\"\x01\"",
            b"\"\xff\"",
            b"tru",
            b"{} x",
            b"",
            b"{'a':1}",
        ] {
            assert!(
                matches!(check(bad, 8), Err(ParseError::Syntax { .. })),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(matches!(
            check(b"[[[[1]]]]", 3),
            Err(ParseError::TooDeep { max: 3 })
        ));
        assert!(check(b"[[[1]]]", 3).is_ok());
    }
}
