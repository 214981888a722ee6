//! What a JetStream source creates or binds, and how it acknowledges.

use std::time::Duration;

/// What the source creates or binds, and how it acknowledges.
///
/// `max_deliveries` is ours: a message that failed on its last allowed delivery is
/// published to the dead-letter subject (with `Nats-Msg-Id` = `"{stream}:{sequence}"`, so
/// a repeat is de-duplicated) and then terminated. The server's `MaxDeliver` is set a few
/// deliveries higher, as a backstop only: it never ends a message silently.
#[derive(Debug, Clone)]
pub struct SourceOptions {
    /// The stream to read.
    pub stream: String,
    /// Subjects of the stream, used only when the stream does not exist yet (then it is
    /// created with them); empty = bind to an existing stream only.
    pub subjects: Vec<String>,
    /// The durable consumer's name; every process with the same name shares the work.
    pub durable: String,
    /// Only messages on this subject (wildcards allowed); empty = all.
    pub filter_subject: String,
    /// How long the server waits for an ack before redelivering. In-progress acks are
    /// sent for messages held longer than a third of it. Default 30 s.
    pub ack_wait: Duration,
    /// Deliveries allowed before the message is dead-lettered. Default 5.
    pub max_deliveries: u32,
    /// The first nak delay; doubled per delivery up to `max_nak_delay`. Default 1 s.
    pub nak_delay: Duration,
    /// The longest nak delay. Default 60 s.
    pub max_nak_delay: Duration,
    /// Where dead letters go. Default `"dlq.{stream}"`.
    pub dead_letter_subject: String,
    /// A stream capturing `dead_letter_subject`, created if missing; `None`: the subject
    /// must already be captured by a stream. Default `"{stream}_DLQ"`. A dead-letter
    /// publish that is not confirmed is logged as an error and the message nak'd for a
    /// later attempt (the server's backstop allows a few).
    pub dead_letter_stream: Option<String>,
    /// How long one fetch waits for a first message when none is ready (the server holds
    /// the pull request this long; the client gives up a little later). Default 2 s.
    pub fetch_wait: Duration,
    /// How often consumer info (lag, ack pending) is read for [`Backlog`](pipeline_core::source::Backlog). Default 5 s.
    pub backlog_every: Duration,
    /// The consumer's `MaxAckPending`, over every process sharing it: the server stops
    /// delivering while this many messages wait for acks. `None`: the server's default
    /// (1000 on 2.9). Give it at least the sum of the workers' in-flight bounds, or one
    /// worker's full edges can starve the others.
    pub max_ack_pending: Option<i64>,
    /// The source's name in stats and the topology. Default `"nats"`.
    pub name: String,
}

impl SourceOptions {
    /// Reads `stream` through the durable consumer `durable`, with the defaults above.
    pub fn new(stream: impl Into<String>, durable: impl Into<String>) -> Self {
        let stream = stream.into();
        SourceOptions {
            subjects: Vec::new(),
            durable: durable.into(),
            filter_subject: String::new(),
            ack_wait: Duration::from_secs(30),
            max_deliveries: 5,
            nak_delay: Duration::from_secs(1),
            max_nak_delay: Duration::from_secs(60),
            dead_letter_subject: format!("dlq.{stream}"),
            dead_letter_stream: Some(format!("{stream}_DLQ")),
            fetch_wait: Duration::from_secs(2),
            backlog_every: Duration::from_secs(5),
            max_ack_pending: None,
            name: "nats".to_owned(),
            stream,
        }
    }

    /// Creates the stream with these subjects if it does not exist.
    pub fn with_subjects<I: IntoIterator<Item = S>, S: Into<String>>(
        mut self,
        subjects: I,
    ) -> Self {
        self.subjects = subjects.into_iter().map(Into::into).collect();
        self
    }

    /// See [`filter_subject`](Self::filter_subject).
    pub fn with_filter_subject(mut self, subject: impl Into<String>) -> Self {
        self.filter_subject = subject.into();
        self
    }

    /// See [`ack_wait`](Self::ack_wait).
    pub fn with_ack_wait(mut self, ack_wait: Duration) -> Self {
        self.ack_wait = ack_wait;
        self
    }

    /// See [`max_deliveries`](Self::max_deliveries) (at least 1).
    pub fn with_max_deliveries(mut self, n: u32) -> Self {
        self.max_deliveries = n.max(1);
        self
    }

    /// See [`nak_delay`](Self::nak_delay) and [`max_nak_delay`](Self::max_nak_delay).
    pub fn with_nak_delay(mut self, first: Duration, max: Duration) -> Self {
        self.nak_delay = first;
        self.max_nak_delay = max.max(first);
        self
    }

    /// See [`dead_letter_subject`](Self::dead_letter_subject) and
    /// [`dead_letter_stream`](Self::dead_letter_stream).
    pub fn with_dead_letter(mut self, subject: impl Into<String>, stream: Option<String>) -> Self {
        self.dead_letter_subject = subject.into();
        self.dead_letter_stream = stream;
        self
    }

    /// See [`fetch_wait`](Self::fetch_wait).
    pub fn with_fetch_wait(mut self, wait: Duration) -> Self {
        self.fetch_wait = wait.max(Duration::from_millis(10));
        self
    }

    /// See [`backlog_every`](Self::backlog_every).
    pub fn with_backlog_every(mut self, every: Duration) -> Self {
        self.backlog_every = every.max(Duration::from_millis(10));
        self
    }

    /// See [`max_ack_pending`](Self::max_ack_pending).
    pub fn with_max_ack_pending(mut self, n: i64) -> Self {
        self.max_ack_pending = Some(n);
        self
    }

    /// See [`name`](Self::name).
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// The server-side `MaxDeliver`: ours plus headroom for failed dead-letter writes.
    pub(super) fn server_max_deliver(&self) -> i64 {
        i64::from(self.max_deliveries) + DLQ_HEADROOM
    }
}

/// Deliveries past our limit the server still allows, so a dead-letter publish that
/// failed can be retried on a later delivery.
const DLQ_HEADROOM: i64 = 5;
