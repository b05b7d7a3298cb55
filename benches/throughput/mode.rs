//! The modes a row runs in (see the bench's docs): their names on the
//! command line and in the table, and what each one does.

/// What each caller does (see the bench's docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Mode {
    Replay,
    Hot,
    Fresh,
    Claim,
    ClaimConn,
    Select,
    SelectConn,
    Write,
    WriteConn,
    ReadWriteConn,
    PgbenchSelect,
    PgbenchWrite,
}

impl Mode {
    const NAMES: [(&'static str, Mode); 12] = [
        ("replay", Mode::Replay),
        ("hot", Mode::Hot),
        ("fresh", Mode::Fresh),
        ("claim", Mode::Claim),
        ("claim-conn", Mode::ClaimConn),
        ("select", Mode::Select),
        ("select-conn", Mode::SelectConn),
        ("write", Mode::Write),
        ("write-conn", Mode::WriteConn),
        ("read-write-conn", Mode::ReadWriteConn),
        ("pgbench-select", Mode::PgbenchSelect),
        ("pgbench-write", Mode::PgbenchWrite),
    ];

    /// The modes only PostgreSQL runs.
    pub(crate) const POSTGRES_ONLY: [Mode; 3] =
        [Mode::ClaimConn, Mode::PgbenchSelect, Mode::PgbenchWrite];

    pub(crate) fn parse(name: &str) -> Option<Mode> {
        Mode::NAMES
            .iter()
            .find(|(known, _)| *known == name)
            .map(|&(_, mode)| mode)
    }

    pub(crate) fn name(self) -> &'static str {
        Mode::NAMES
            .iter()
            .find(|(_, mode)| *mode == self)
            .map_or("?", |(name, _)| name)
    }

    /// Whether the mode writes new keys (against the fresh floor) rather
    /// than reading completed ones (against the replay floor).
    pub(crate) fn writes(self) -> bool {
        matches!(
            self,
            Mode::Fresh | Mode::Write | Mode::WriteConn | Mode::ReadWriteConn | Mode::PgbenchWrite
        )
    }

    /// Whether a caller holds a connection for the run.
    pub(crate) fn holds(self) -> bool {
        matches!(
            self,
            Mode::ClaimConn | Mode::SelectConn | Mode::WriteConn | Mode::ReadWriteConn
        )
    }

    /// Whether the raw client runs the mode (not the store, not `pgbench`).
    pub(crate) fn raw(self) -> bool {
        matches!(
            self,
            Mode::ClaimConn
                | Mode::Select
                | Mode::SelectConn
                | Mode::Write
                | Mode::WriteConn
                | Mode::ReadWriteConn
        )
    }
}
