//! A bash command line split into simple commands and words, as bash would split it, without expanding anything.

/// A command line split into simple commands.
#[derive(Default)]
pub struct Lexed {
    pub segments: Vec<Vec<String>>,
    /// For each segment, whether it reads the previous one's output through a pipe (`|` or `|&`).
    pub piped: Vec<bool>,
    /// Every redirection, in order.
    pub redirects: Vec<Redirect>,
    /// Double-quoted text containing a substitution, whose commands deny rules must also see.
    pub nested: Vec<String>,
    /// For each nested text, the index of the segment it was found in.
    pub nested_at: Vec<usize>,
    /// Syntax that is not fully modelled, so the words may not be what runs.
    pub opaque: bool,
    /// A control operator other than a newline.
    pub compound: bool,
}

/// A redirection: its operator with any file-descriptor number (`>`, `2>>`, `2>&`, `<(` for a process
/// substitution…), its target word (empty when there is none), and the index of the segment it belongs to
/// (`None` when that segment has no words).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    pub op: String,
    pub target: String,
    pub segment: Option<usize>,
}

#[derive(Default)]
struct Lexer {
    out: Lexed,
    seg: Vec<String>,
    word: Option<String>,
    /// The next word is a redirection target, not an argument.
    target: bool,
    /// The segment being read gets its input from a pipe.
    pipe: bool,
}

impl Lexer {
    fn push(&mut self, c: char) {
        self.word.get_or_insert_with(String::new).push(c);
    }
    fn end_word(&mut self) {
        if let Some(w) = self.word.take() {
            if std::mem::take(&mut self.target) {
                if let Some(r) = self.out.redirects.last_mut() {
                    r.target = w;
                }
            } else {
                self.seg.push(w);
            }
        }
    }
    fn end_segment(&mut self) {
        self.end_word();
        self.target = false;
        let index = self.out.segments.len();
        if !self.seg.is_empty() {
            self.out.segments.push(std::mem::take(&mut self.seg));
            self.out.piped.push(std::mem::take(&mut self.pipe));
        } else {
            // Redirections of a command without words belong to no command.
            for r in self.out.redirects.iter_mut().rev() {
                if r.segment != Some(index) {
                    break;
                }
                r.segment = None;
            }
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
                let mut op = String::new();
                if lx
                    .word
                    .as_deref()
                    .is_some_and(|w| w.bytes().all(|b| b.is_ascii_digit()))
                {
                    op = lx.word.take().unwrap_or_default();
                }
                lx.end_word();
                let start = i - 1;
                while matches!(chars.get(i), Some('<' | '>' | '&' | '|' | '-')) {
                    i += 1;
                }
                op.extend(&chars[start..i]);
                if chars.get(i) == Some(&'(') {
                    op.push('(');
                }
                lx.out.redirects.push(Redirect {
                    op,
                    target: String::new(),
                    segment: Some(lx.out.segments.len()),
                });
                lx.target = true;
            }
            '|' => {
                lx.end_segment();
                lx.out.compound = true;
                match chars.get(i) {
                    // `||` is a list, not a pipe.
                    Some('|') => i += 1,
                    // `|&` pipes standard error too.
                    Some('&') if chars.get(i + 1) != Some(&'>') => {
                        i += 1;
                        lx.pipe = true;
                    }
                    _ => lx.pipe = true,
                }
            }
            ';' | '&' | '(' | ')' | '`' => {
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
                    lx.out.nested_at.push(lx.out.segments.len());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipes_and_redirections_are_recorded() {
        let l = lex("a 2>&1 | b |& c || d && e > f; g <(h) >> i");
        assert_eq!(
            l.segments,
            vec![
                vec!["a"],
                vec!["b"],
                vec!["c"],
                vec!["d"],
                vec!["e"],
                vec!["g"],
                vec!["h"]
            ]
        );
        assert_eq!(l.piped, vec![false, true, true, false, false, false, false]);
        let r: Vec<(&str, &str, Option<usize>)> = l
            .redirects
            .iter()
            .map(|r| (r.op.as_str(), r.target.as_str(), r.segment))
            .collect();
        assert_eq!(
            r,
            vec![
                ("2>&", "1", Some(0)),
                (">", "f", Some(4)),
                ("<(", "", Some(5)),
                (">>", "i", None),
            ]
        );
        let l = lex("x |\n y");
        assert_eq!(l.piped, vec![false, true], "a pipe goes on after a newline");
        let l = lex("echo \"$(curl x)\" | sh");
        assert_eq!(
            (l.nested.as_slice(), l.nested_at.as_slice()),
            (&["$(curl x)".to_string()][..], &[0][..])
        );
    }
}
