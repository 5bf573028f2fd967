//! A bash command line split into simple commands and words, as bash would split it, without expanding anything.

/// A command line split into simple commands.
#[derive(Default)]
pub struct Lexed {
    pub segments: Vec<Vec<String>>,
    /// Double-quoted text containing a substitution, whose commands deny rules must also see.
    pub nested: Vec<String>,
    /// Syntax that is not fully modelled, so the words may not be what runs.
    pub opaque: bool,
    /// A control operator other than a newline.
    pub compound: bool,
}

#[derive(Default)]
struct Lexer {
    out: Lexed,
    seg: Vec<String>,
    word: Option<String>,
    /// The next word is a redirection target, not an argument.
    target: bool,
}

impl Lexer {
    fn push(&mut self, c: char) {
        self.word.get_or_insert_with(String::new).push(c);
    }
    fn end_word(&mut self) {
        if let Some(w) = self.word.take()
            && !std::mem::take(&mut self.target)
        {
            self.seg.push(w);
        }
    }
    fn end_segment(&mut self) {
        self.end_word();
        self.target = false;
        if !self.seg.is_empty() {
            self.out.segments.push(std::mem::take(&mut self.seg));
        }
    }
}

/// Splits a command line as bash does, without expanding anything.
pub fn lex(src: &str) -> Lexed {
    let chars: Vec<char> = src.chars().collect();
    let mut lx = Lexer::default();
    // Bash splits words on space, tab and newline only, so any other space-like character would silently
    // join words; anything outside printable ASCII is therefore never trusted.
    lx.out.opaque = chars.iter().any(|c| !matches!(c, ' '..='~' | '\t' | '\n'));
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        i += 1;
        match c {
            ' ' | '\t' => lx.end_word(),
            '\n' => lx.end_segment(),
            '#' if lx.word.is_none() => {
                while chars.get(i).is_some_and(|&c| c != '\n') {
                    i += 1;
                }
            }
            '<' | '>' | '&' if c != '&' || chars.get(i) == Some(&'>') => {
                // A redirection: a leading file-descriptor number and the target word are not arguments.
                lx.out.opaque = true;
                if lx
                    .word
                    .as_deref()
                    .is_some_and(|w| w.bytes().all(|b| b.is_ascii_digit()))
                {
                    lx.word = None;
                }
                lx.end_word();
                while matches!(chars.get(i), Some('<' | '>' | '&' | '|' | '-')) {
                    i += 1;
                }
                lx.target = true;
            }
            ';' | '&' | '|' | '(' | ')' | '`' => {
                lx.end_segment();
                lx.out.compound = true;
                lx.out.opaque |= matches!(c, '(' | ')' | '`');
            }
            '\'' => {
                let rest = &chars[i..];
                let n = rest.iter().position(|&c| c == '\'');
                lx.out.opaque |= n.is_none();
                let n = n.unwrap_or(rest.len());
                lx.word.get_or_insert_with(String::new).extend(&rest[..n]);
                i += n + 1;
            }
            '"' => {
                let (mut text, mut closed, mut subst) = (String::new(), false, false);
                while let Some(&d) = chars.get(i) {
                    i += 1;
                    match d {
                        '"' => {
                            closed = true;
                            break;
                        }
                        '\\' => match chars.get(i) {
                            Some('\n') => i += 1,
                            Some(&e @ ('$' | '`' | '"' | '\\')) => {
                                text.push(e);
                                i += 1;
                            }
                            _ => text.push('\\'),
                        },
                        '$' | '`' => {
                            subst = true;
                            text.push(d);
                        }
                        _ => text.push(d),
                    }
                }
                lx.out.opaque |= !closed || subst;
                if subst {
                    lx.out.nested.push(text.clone());
                }
                lx.word.get_or_insert_with(String::new).push_str(&text);
            }
            '\\' => match chars.get(i) {
                Some('\n') => i += 1,
                Some(&e) => {
                    lx.push(e);
                    i += 1;
                }
                None => lx.out.opaque = true,
            },
            '$' | '*' | '?' | '[' | '{' | '}' | '~' | '!' => {
                lx.out.opaque = true;
                lx.push(c);
            }
            _ => lx.push(c),
        }
    }
    lx.end_segment();
    lx.out
}
