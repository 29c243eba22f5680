//! Tokens of the `.tir` text form, with their 1-based line and column.
//!
//! Whitespace and newlines only separate tokens; `//` starts a comment that runs to the end of the
//! line. Lexing never fails outright: a character that starts no token becomes an
//! [`TokenKind::Invalid`] token, and the parser reports it when it reaches it, so errors come out in
//! source order.

/// What a token is. The text of names and numbers is kept as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum TokenKind {
    /// `[A-Za-z_][A-Za-z0-9_.]*`: keywords, op names, dtypes, kernel names.
    Ident(String),
    /// `%` followed by `[A-Za-z0-9_.]*` (possibly empty; the parser checks the form).
    Value(String),
    /// `@` followed by `[A-Za-z0-9_.]*`.
    Buffer(String),
    /// `-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
    Number(String),
    /// One of `( ) { } [ ] < > , : = -`.
    Punct(char),
    /// A character that starts no token.
    Invalid(char),
    Eof,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Token {
    pub kind: TokenKind,
    pub line: u32,
    pub column: u32,
}

impl Token {
    /// How the token reads in an error message: "`%x`", "end of input".
    pub fn describe(&self) -> String {
        match &self.kind {
            TokenKind::Ident(s) | TokenKind::Number(s) => format!("`{}`", shorten(s)),
            TokenKind::Value(s) => format!("`%{}`", shorten(s)),
            TokenKind::Buffer(s) => format!("`@{}`", shorten(s)),
            TokenKind::Punct(c) => format!("`{c}`"),
            TokenKind::Invalid(c) => {
                if c.is_control() || c.is_whitespace() {
                    format!("character {}", c.escape_unicode())
                } else {
                    format!("character `{c}`")
                }
            }
            TokenKind::Eof => "end of input".to_string(),
        }
    }
}

/// Token text for a message, cut short so a megabyte-long number does not flood it.
fn shorten(s: &str) -> String {
    const KEEP: usize = 40;
    if s.chars().count() <= KEEP + 8 {
        s.to_string()
    } else {
        let head: String = s.chars().take(KEEP).collect();
        format!("{head}... ({} characters)", s.chars().count())
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '.'
}

/// Splits `src` into tokens; the last one is always [`TokenKind::Eof`].
pub(crate) fn lex(src: &str) -> Vec<Token> {
    let chars: Vec<char> = src.chars().collect();
    let mut tokens = Vec::new();
    let (mut i, mut line, mut column) = (0usize, 1u32, 1u32);
    // Columns count characters; lines are bounded by u32 (saturating keeps absurd inputs safe).
    let advance = |i: &mut usize, line: &mut u32, column: &mut u32, c: char| {
        *i += 1;
        if c == '\n' {
            *line = line.saturating_add(1);
            *column = 1;
        } else {
            *column = column.saturating_add(1);
        }
    };
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            advance(&mut i, &mut line, &mut column, c);
            continue;
        }
        if c == '/' && chars.get(i + 1) == Some(&'/') {
            while i < chars.len() && chars[i] != '\n' {
                let c = chars[i];
                advance(&mut i, &mut line, &mut column, c);
            }
            continue;
        }
        let (start_line, start_column) = (line, column);
        let take_while = |i: &mut usize, column: &mut u32, pred: &dyn Fn(char) -> bool| {
            let start = *i;
            while *i < chars.len() && pred(chars[*i]) {
                *i += 1;
                *column = column.saturating_add(1);
            }
            chars[start..*i].iter().collect::<String>()
        };
        let kind = if c.is_ascii_alphabetic() || c == '_' {
            TokenKind::Ident(take_while(&mut i, &mut column, &is_name_char))
        } else if c == '%' || c == '@' {
            advance(&mut i, &mut line, &mut column, c);
            let name = take_while(&mut i, &mut column, &is_name_char);
            if c == '%' {
                TokenKind::Value(name)
            } else {
                TokenKind::Buffer(name)
            }
        } else if c.is_ascii_digit() || (c == '-' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())) {
            TokenKind::Number(lex_number(&chars, &mut i, &mut column))
        } else if "(){}[]<>,:=-".contains(c) {
            advance(&mut i, &mut line, &mut column, c);
            TokenKind::Punct(c)
        } else {
            advance(&mut i, &mut line, &mut column, c);
            TokenKind::Invalid(c)
        };
        tokens.push(Token { kind, line: start_line, column: start_column });
    }
    tokens.push(Token { kind: TokenKind::Eof, line, column });
    tokens
}

/// Reads a number starting at `chars[*i]` (a digit or a `-` before one).
fn lex_number(chars: &[char], i: &mut usize, column: &mut u32) -> String {
    let start = *i;
    let digit_at = |j: usize| chars.get(j).is_some_and(|c| c.is_ascii_digit());
    let mut j = *i;
    if chars[j] == '-' {
        j += 1;
    }
    while digit_at(j) {
        j += 1;
    }
    if chars.get(j) == Some(&'.') && digit_at(j + 1) {
        j += 1;
        while digit_at(j) {
            j += 1;
        }
    }
    if matches!(chars.get(j), Some('e' | 'E')) {
        let mut k = j + 1;
        if matches!(chars.get(k), Some('+' | '-')) {
            k += 1;
        }
        if digit_at(k) {
            j = k;
            while digit_at(j) {
                j += 1;
            }
        }
    }
    *column = column.saturating_add((j - start) as u32);
    *i = j;
    chars[start..j].iter().collect()
}
