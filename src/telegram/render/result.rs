//! Text too long for its message is never cut silently: the message shows its first lines and says where
//! the whole is (a document sent with it). A job's result, a log and a diff all go this way.

use super::{escape, tg_len};

/// A job's result longer than this (in characters) goes whole into a document beside its message.
pub const RESULT_INLINE: usize = 1500;
/// How many of its first lines the message shows, at most.
const PREVIEW_LINES: usize = 20;
/// How much of them, at most (characters).
const PREVIEW_CHARS: usize = 1000;
/// Telegram's limit for a document's caption (visible characters, UTF-16 code units).
pub const MAX_CAPTION: usize = 1024;

/// Whether a job's result needs a document to be shown whole.
pub fn is_long(result: &str) -> bool {
    result.chars().count() > RESULT_INLINE
}

/// The name of a job's whole result as a file: `<first 8 characters of the job id>-result.md`.
pub fn file_name(job_id: &str) -> String {
    format!("{}-result.md", job_id.chars().take(8).collect::<String>())
}

/// The first lines of `text` that fit `PREVIEW_LINES` lines and `max_chars` characters (a first line
/// longer than that is cut, marked with "…").
pub fn first_lines(text: &str, max_chars: usize) -> String {
    let mut out = String::new();
    for (i, line) in text.lines().enumerate() {
        if i == PREVIEW_LINES {
            break;
        }
        let len = out.chars().count() + line.chars().count() + 1;
        if len > max_chars {
            if i == 0 {
                out = crate::text::cut(line, max_chars);
            }
            break;
        }
        if i > 0 {
            out.push('\n');
        }
        out.push_str(line);
    }
    out
}

/// `12 lines, 3.4 KB`: how big a text sent as a file is.
pub fn size_of(text: &str) -> String {
    let lines = text.lines().count();
    format!(
        "{lines} line{}, {}",
        if lines == 1 { "" } else { "s" },
        crate::core::sessions::human_size(text.len() as u64)
    )
}

/// A job's long result in its message: its first lines, and where the whole is (the document goes just
/// before the message).
pub fn preview_html(result: &str) -> String {
    format!(
        "{}\n…\n📄 <i>The whole result is in the file above.</i>",
        escape(&first_lines(result, PREVIEW_CHARS))
    )
}

/// The caption of a long text sent as a document: `head` (HTML), the text's size, its first lines in a
/// `<pre>` block and a note that the whole is in the file; within Telegram's caption limit however long
/// `head` is. `note` says what was left out when the file itself holds only a part.
pub fn document_caption(head: &str, text: &str, note: Option<&str>) -> String {
    let whole = match note {
        Some(n) => format!("📄 <i>{}</i>", escape(n)),
        None => "📄 <i>The whole text is in the file.</i>".to_string(),
    };
    let top = format!("{head} ({})", escape(&size_of(text)));
    let room = MAX_CAPTION
        .saturating_sub(tg_len(&top) + tg_len(&whole) + 30)
        .min(PREVIEW_CHARS);
    // Escaping only lengthens the text, so what fits escaped fits as the reader sees it.
    let mut chars = room;
    let mut shown = escape(&first_lines(text, chars));
    while tg_len(&shown) > room && chars > 0 {
        chars = chars * 3 / 4;
        shown = escape(&first_lines(text, chars));
    }
    if shown.trim().is_empty() {
        return format!("{top}\n{whole}");
    }
    format!("{top}\n<pre>{shown}</pre>\n…\n{whole}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_lines_fit_their_bounds() {
        let text: String = (1..=100).map(|i| format!("line {i}\n")).collect();
        let head = first_lines(&text, 1000);
        assert_eq!(head.lines().count(), PREVIEW_LINES);
        assert!(head.starts_with("line 1\nline 2\n") && head.ends_with("line 20"));
        assert_eq!(first_lines(&text, 20), "line 1\nline 2\nline 3");
        let one = "x".repeat(5000);
        assert_eq!(first_lines(&one, 10).chars().count(), 10);
        assert!(first_lines(&one, 10).ends_with('…'));
    }

    #[test]
    fn a_caption_stays_under_telegrams_limit_whatever_it_shows() {
        for text in [
            "<&>".repeat(3000),
            "🦀 crab\n".repeat(2000),
            "short\n".to_string(),
            String::new(),
        ] {
            let c = document_caption("Log of job <code>abc</code>", &text, None);
            assert!(tg_len(&c) <= MAX_CAPTION, "{} > {MAX_CAPTION}", tg_len(&c));
            assert!(c.contains("The whole text is in the file"), "{c}");
        }
        let c = document_caption("Diff", "a\nb\n", Some("only the last 5 MB"));
        assert!(
            c.contains("<pre>a\nb</pre>") && c.contains("only the last 5 MB"),
            "{c}"
        );
        assert!(c.contains("(2 lines, 4 bytes)"), "{c}");
    }

    #[test]
    fn a_long_result_names_its_file() {
        assert!(!is_long(&"x".repeat(RESULT_INLINE)));
        assert!(is_long(&"x".repeat(RESULT_INLINE + 1)));
        assert_eq!(file_name("0123456789abcdef"), "01234567-result.md");
        let p = preview_html(&"a < b\n".repeat(400));
        assert!(
            p.starts_with("a &lt; b\n") && p.contains("whole result"),
            "{p}"
        );
    }
}
