//! Why the store is read-only: a write failure of the disk or file (full, I/O, read-only file) or a failed
//! integrity check. Each cause is one value of `televibe_database_read_only_reason{reason}`, so an alert
//! can name the failure (a full disk wants `admin cleanup`, corruption a restore).

/// The cause of read-only mode, as the metric's `reason` label spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOnlyCause {
    /// `SQLITE_FULL`: the disk (or the file's quota) is full.
    DiskFull,
    /// `SQLITE_IOERR` or the file cannot be opened any more: the disk or its file system failed.
    IoError,
    /// `SQLITE_READONLY`: the file or its file system refuses writes (permissions, a read-only remount).
    ReadOnlyFile,
    /// `PRAGMA integrity_check`/`quick_check` failed, or SQLite said the file is malformed.
    Integrity,
}

impl ReadOnlyCause {
    /// Every cause, in the order the metric lists them.
    pub const ALL: [ReadOnlyCause; 4] = [
        ReadOnlyCause::DiskFull,
        ReadOnlyCause::IoError,
        ReadOnlyCause::ReadOnlyFile,
        ReadOnlyCause::Integrity,
    ];

    /// The `reason` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ReadOnlyCause::DiskFull => "disk_full",
            ReadOnlyCause::IoError => "io_error",
            ReadOnlyCause::ReadOnlyFile => "read_only_file",
            ReadOnlyCause::Integrity => "integrity",
        }
    }

    /// The cause a failed write's error text names, if it is a storage failure at all.
    pub fn of_error(text: &str) -> Option<ReadOnlyCause> {
        let t = text.to_lowercase();
        if looks_corrupt(&t) {
            Some(ReadOnlyCause::Integrity)
        } else if t.contains("database or disk is full") || t.contains("no space left") {
            Some(ReadOnlyCause::DiskFull)
        } else if t.contains("disk i/o error") || t.contains("unable to open database file") {
            Some(ReadOnlyCause::IoError)
        } else if t.contains("readonly database") || t.contains("read-only") {
            Some(ReadOnlyCause::ReadOnlyFile)
        } else {
            None
        }
    }
}

/// Whether an error text says the database file is damaged.
pub fn looks_corrupt(text: &str) -> bool {
    let t = text.to_lowercase();
    t.contains("file is not a database") || t.contains("malformed") || t.contains("corrupt")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_errors_name_their_cause() {
        for (text, cause) in [
            (
                "Execution Error: error returned from database: (code: 13) database or disk is full",
                Some(ReadOnlyCause::DiskFull),
            ),
            (
                "error returned from database: (code: 10) disk I/O error",
                Some(ReadOnlyCause::IoError),
            ),
            (
                "(code: 14) unable to open database file",
                Some(ReadOnlyCause::IoError),
            ),
            (
                "(code: 8) attempt to write a readonly database",
                Some(ReadOnlyCause::ReadOnlyFile),
            ),
            (
                "(code: 11) database disk image is malformed",
                Some(ReadOnlyCause::Integrity),
            ),
            ("file is not a database", Some(ReadOnlyCause::Integrity)),
            ("UNIQUE constraint failed: jobs.id", None),
        ] {
            assert_eq!(ReadOnlyCause::of_error(text), cause, "{text}");
        }
        let labels: Vec<&str> = ReadOnlyCause::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(labels, crate::telemetry::READ_ONLY_REASONS);
    }
}
