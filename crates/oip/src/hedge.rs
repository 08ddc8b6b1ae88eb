//! Hedged second attempts of a remote member's requests. When a request's answer has not started
//! by the member's recent 95th percentile of answer times, the same request goes out again — to the
//! hedge URL when one is registered, else to the same server on another connection — and the first
//! good answer wins; the loser's connection is cut off so that its caller returns at once. A
//! request that fails outright before then is tried at the hedge URL (a replica) while time is left.
//! Hedges in flight are capped: a server slow for everyone is not sent twice the load.

use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use super::http::{Client, Response, Sent};

/// Answer times kept for the percentile.
const WINDOW: usize = 256;
/// The percentile is recomputed every this many answers (and first after as many).
const REFRESH: usize = 32;
/// Second attempts in flight at once, per remote model.
const MAX_IN_FLIGHT: usize = 4;
/// The shortest wait before a hedge: below it a second request costs more than it can save.
const MIN_AFTER: Duration = Duration::from_micros(200);

/// Where and when one remote model's requests are hedged.
pub struct Hedge {
    /// Where second attempts go.
    client: Arc<Client>,
    infer_path: String,
    /// `client` is another server than the first attempt's (worth a try after a fast failure).
    other_server: bool,
    /// Recent answer times, microseconds (a ring).
    recent: Box<[AtomicU32]>,
    answers: AtomicUsize,
    /// The 95th percentile of `recent` in microseconds; `u64::MAX` until `REFRESH` answers came.
    after_us: AtomicU64,
    in_flight: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Hedge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hedge")
            .field("infer_path", &self.infer_path)
            .field("other_server", &self.other_server)
            .field("after_us", &self.after_us.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// A hedge in flight, counted until dropped.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One request as it goes out: its header lines (not the head, whose `Host` differs per server)
/// and body.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The request target (`/v2/models/NAME/infer`).
    pub path: &'a str,
    /// Extra header lines (`Name: value`, no CRLF).
    pub headers: &'a [String],
    /// The request body.
    pub body: &'a [u8],
    /// When the call started (for its answer time) and when it must be answered.
    pub start: Instant,
    /// The call's deadline: no attempt runs past it.
    pub deadline: Instant,
}

impl Hedge {
    /// Second attempts to `client` at `infer_path`; `other_server` when that is not the first
    /// attempt's server.
    pub fn new(client: Arc<Client>, infer_path: String, other_server: bool) -> Hedge {
        Hedge {
            client,
            infer_path,
            other_server,
            recent: (0..WINDOW).map(|_| AtomicU32::new(0)).collect(),
            answers: AtomicUsize::new(0),
            after_us: AtomicU64::new(u64::MAX),
            in_flight: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// How long a request waits before it is hedged, once enough answers were seen.
    pub fn after(&self) -> Option<Duration> {
        let us = self.after_us.load(Ordering::Relaxed);
        (us != u64::MAX).then(|| Duration::from_micros(us).max(MIN_AFTER))
    }

    /// Notes one good answer's time.
    pub fn record(&self, took: Duration) {
        let i = self.answers.fetch_add(1, Ordering::Relaxed);
        let us = u32::try_from(took.as_micros()).unwrap_or(u32::MAX);
        self.recent[i % WINDOW].store(us, Ordering::Relaxed);
        if (i + 1).is_multiple_of(REFRESH) {
            let known = (i + 1).min(WINDOW);
            let mut times = [0u32; WINDOW];
            for (t, r) in times.iter_mut().zip(self.recent.iter()).take(known) {
                *t = r.load(Ordering::Relaxed);
            }
            let times = &mut times[..known];
            let rank = (known * 95).div_ceil(100) - 1;
            let (_, p95, _) = times.select_nth_unstable(rank);
            self.after_us.store(u64::from(*p95), Ordering::Relaxed);
        }
    }

    /// Sends `request` through `client` and reads its answer, hedged as described above.
    pub fn request(&self, client: &Client, request: &Request<'_>) -> Result<Response, String> {
        let head = client.head("POST", request.path, request.headers, request.body);
        let sent = match client.send(&head, request.body, request.deadline) {
            Ok(sent) => sent,
            Err(e) => return self.failover(e, request),
        };
        let due = self.after().map(|after| request.start + after).filter(|&due| due < request.deadline);
        let hedged = match due {
            Some(due) if !sent.answer_started(due) => self.slot(),
            _ => None,
        };
        let Some(slot) = hedged else {
            let answer = client.finish(sent, &head, request.body, request.deadline).and_then(accepted);
            return answer.or_else(|e| self.failover(e, request));
        };
        self.race(client, sent, slot, request)
    }

    fn slot(&self) -> Option<Slot> {
        let taken = self.in_flight.fetch_add(1, Ordering::AcqRel);
        let slot = Slot(self.in_flight.clone());
        (taken < MAX_IN_FLIGHT).then_some(slot)
    }

    /// The first attempt, late, against a second one on a helper thread: the first good answer
    /// wins, and a winning second attempt cuts the first off.
    fn race(&self, client: &Client, sent: Sent, slot: Slot, request: &Request<'_>) -> Result<Response, String> {
        let decided = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::sync_channel(1);
        let second = {
            let (client, path, decided, cut) =
                (self.client.clone(), self.infer_path.clone(), decided.clone(), sent.socket());
            let (headers, body, deadline) = (request.headers.to_vec(), request.body.to_vec(), request.deadline);
            move || {
                let _slot = slot;
                let answer = client.request("POST", &path, &headers, &body, deadline).and_then(accepted);
                let won = answer.is_ok() && !decided.swap(true, Ordering::AcqRel);
                if won || answer.is_err() {
                    let _ = tx.send(answer);
                }
                if let (true, Some(socket)) = (won, cut) {
                    let _ = socket.shutdown(Shutdown::Both);
                }
            }
        };
        if std::thread::Builder::new().name("quorum-hedge".into()).spawn(second).is_err() {
            return client.read(sent, request.deadline).map(|(response, _)| response).and_then(accepted);
        }
        match client.read(sent, request.deadline).and_then(|(response, conn)| Ok((accepted(response)?, conn))) {
            Ok((response, conn)) => {
                // Decided here: the second attempt can no longer cut this connection off.
                if !decided.swap(true, Ordering::AcqRel) {
                    client.release(conn);
                }
                Ok(response)
            }
            Err(first) => match rx.recv_timeout(request.deadline.saturating_duration_since(Instant::now())) {
                Ok(Ok(response)) => Ok(response),
                Ok(Err(second)) => Err(format!("{first} (the hedged attempt: {second})")),
                Err(_) => Err(first),
            },
        }
    }

    /// After the first attempt failed outright: the hedge URL, while time is left.
    fn failover(&self, first: String, request: &Request<'_>) -> Result<Response, String> {
        if !self.other_server || Instant::now() >= request.deadline {
            return Err(first);
        }
        let answer = self.client.request("POST", &self.infer_path, request.headers, request.body, request.deadline);
        answer.and_then(accepted).map_err(|second| format!("{first} (the hedge URL: {second})"))
    }
}

/// A 200 answer, or the failure another status is.
pub fn accepted(response: Response) -> Result<Response, String> {
    if response.status == 200 {
        return Ok(response);
    }
    Err(format!("HTTP {}: {}", response.status, crate::error_text(&response.body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_is_the_95th_percentile_of_recent_answers_once_enough_came() {
        let endpoint = crate::http::Endpoint::resolve("127.0.0.1:9", false).unwrap();
        let hedge = Hedge::new(Arc::new(Client::new(endpoint, 1024)), "/v2/models/m/infer".into(), false);
        for i in 0..REFRESH - 1 {
            hedge.record(Duration::from_millis(1 + i as u64 % 2));
        }
        assert_eq!(hedge.after(), None);
        hedge.record(Duration::from_millis(1));
        assert_eq!(hedge.after(), Some(Duration::from_millis(2)));
        // 95 answers of 1 ms and 5 of 40 ms per hundred: the percentile sits at the 1 ms ones' edge.
        for i in 0..WINDOW * 2 {
            hedge.record(Duration::from_millis(if i % 100 < 5 { 40 } else { 1 }));
        }
        let after = hedge.after().unwrap();
        assert!(after >= Duration::from_millis(1) && after <= Duration::from_millis(40), "{after:?}");
        for _ in 0..WINDOW {
            hedge.record(Duration::from_micros(10));
        }
        assert_eq!(hedge.after(), Some(MIN_AFTER));
    }
}
