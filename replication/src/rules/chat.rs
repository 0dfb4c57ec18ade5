//! Chat on the game port: a line a player says reaches every player whose ship is within the
//! interest radius of the speaker's ship, on the reliable ordered channel. Pure decisions over
//! plain data (the text check, who hears it); the gate keeps each player's rate state.

use std::collections::BTreeMap;
use std::time::Instant;

use sidereal_game::MAX_CHAT_CHARS;

use crate::login::limits::RateLimiter;

/// Every `result` label of `sidereal_chat_total`.
pub const CHAT_RESULTS: [&str; 6] = [
    "delivered",
    "empty",
    "too_long",
    "control_characters",
    "rate_limited",
    "no_ship",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChatRefusal {
    #[error("empty message")]
    Empty,
    #[error("longer than {MAX_CHAT_CHARS} characters")]
    TooLong,
    #[error("control characters are not allowed")]
    ControlCharacters,
    #[error("too many messages: at most 5 at once, then one a second")]
    RateLimited,
    #[error("your ship is not in view yet, so nobody is near enough to hear")]
    NoShip,
}

impl ChatRefusal {
    pub fn label(&self) -> &'static str {
        match self {
            ChatRefusal::Empty => "empty",
            ChatRefusal::TooLong => "too_long",
            ChatRefusal::ControlCharacters => "control_characters",
            ChatRefusal::RateLimited => "rate_limited",
            ChatRefusal::NoShip => "no_ship",
        }
    }
}

/// The line as it will be relayed (surrounding whitespace trimmed), or why not.
pub fn check_text(text: &str) -> Result<&str, ChatRefusal> {
    let text = text.trim();
    if text.is_empty() {
        return Err(ChatRefusal::Empty);
    }
    if text.chars().count() > MAX_CHAT_CHARS {
        return Err(ChatRefusal::TooLong);
    }
    if text.chars().any(char::is_control) {
        return Err(ChatRefusal::ControlCharacters);
    }
    Ok(text)
}

/// The players whose ships are within `radius` of `at` (the speaker included).
pub fn listeners(at: [f32; 2], ships: &[(u64, [f32; 2])], radius: f32) -> Vec<u64> {
    let r2 = radius * radius;
    ships
        .iter()
        .filter(|(_, p)| (p[0] - at[0]).powi(2) + (p[1] - at[1]).powi(2) <= r2)
        .map(|(player, _)| *player)
        .collect()
}

/// Refusals a player is told about: this many at once, then one a second. A flood of bad lines
/// is refused and counted line by line, but must not turn into as many reliable replies.
pub const REFUSAL_REPLY_BURST: u32 = 3;

/// Per-player chat rate limits and the counts of what was said.
#[derive(Debug)]
pub struct ChatGate {
    per_player: RateLimiter<u64>,
    /// How often each player is told why a line was refused.
    replies: RateLimiter<u64>,
    counts: BTreeMap<&'static str, u64>,
    /// Refusals counted but not answered (the reply rate was spent).
    pub unanswered: u64,
}

impl Default for ChatGate {
    fn default() -> Self {
        Self {
            per_player: RateLimiter::new(1.0, 5, 100_000),
            replies: RateLimiter::new(1.0, REFUSAL_REPLY_BURST, 100_000),
            counts: CHAT_RESULTS.iter().map(|r| (*r, 0)).collect(),
            unanswered: 0,
        }
    }
}

impl ChatGate {
    /// Admits or refuses one line of `player`; counts a refusal here, a delivery by `delivered`.
    pub fn admit<'t>(
        &mut self,
        player: u64,
        text: &'t str,
        now: Instant,
    ) -> Result<&'t str, ChatRefusal> {
        let r = check_text(text).and_then(|t| {
            self.per_player
                .take(&player, now)
                .map(|()| t)
                .map_err(|_| ChatRefusal::RateLimited)
        });
        if let Err(e) = r {
            *self.counts.entry(e.label()).or_default() += 1;
        }
        r
    }

    pub fn delivered(&mut self) {
        *self.counts.entry("delivered").or_default() += 1;
    }

    /// Whether `player` is told about a refusal now; false once its reply rate is spent.
    pub fn answer_refusal(&mut self, player: u64, now: Instant) -> bool {
        let answer = self.replies.take(&player, now).is_ok();
        if !answer {
            self.unanswered += 1;
        }
        answer
    }

    /// A line admitted but not deliverable: counted as refused.
    pub fn refused(&mut self, why: ChatRefusal) {
        *self.counts.entry(why.label()).or_default() += 1;
    }

    pub fn counts(&self) -> &BTreeMap<&'static str, u64> {
        &self.counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_trimmed_and_bounded() {
        assert_eq!(check_text("  hello there \n"), Ok("hello there"));
        assert_eq!(check_text(" \t "), Err(ChatRefusal::Empty));
        let long = "é".repeat(MAX_CHAT_CHARS);
        assert_eq!(
            check_text(&long),
            Ok(long.as_str()),
            "characters, not bytes"
        );
        assert_eq!(check_text(&format!("{long}x")), Err(ChatRefusal::TooLong));
        assert_eq!(check_text("bell\u{7}"), Err(ChatRefusal::ControlCharacters));
        assert_eq!(
            check_text("two\nlines"),
            Err(ChatRefusal::ControlCharacters)
        );
    }

    #[test]
    fn only_ships_within_the_radius_hear() {
        let ships = [
            (1, [0.0, 0.0]),
            (2, [300.0, 400.0]),
            (3, [300.0, 400.1]),
            (4, [-10.0, 0.0]),
        ];
        assert_eq!(listeners([0.0, 0.0], &ships, 500.0), vec![1, 2, 4]);
        assert_eq!(listeners([1e6, 0.0], &ships, 500.0), Vec::<u64>::new());
    }

    #[test]
    fn a_flood_of_bad_lines_gets_a_few_replies_not_one_each() {
        let mut gate = ChatGate::default();
        let t0 = Instant::now();
        let answered = (0..100)
            .filter(|_| {
                gate.admit(1, "", t0).unwrap_err();
                gate.answer_refusal(1, t0)
            })
            .count();
        assert_eq!(answered, REFUSAL_REPLY_BURST as usize);
        assert_eq!(gate.counts()["empty"], 100, "every refusal is counted");
        assert_eq!(gate.unanswered, 100 - u64::from(REFUSAL_REPLY_BURST));
        // Another player is told; the flooder again a second later.
        assert!(gate.answer_refusal(2, t0));
        assert!(gate.answer_refusal(1, t0 + std::time::Duration::from_secs(1)));
    }

    #[test]
    fn a_chatty_player_is_limited_and_others_are_not() {
        let mut gate = ChatGate::default();
        let now = Instant::now();
        let through = (0..20)
            .filter(|_| gate.admit(7, "spam", now).is_ok())
            .count();
        assert_eq!(through, 5, "a burst of five");
        assert_eq!(
            gate.admit(8, "hi", now),
            Ok("hi"),
            "another player is not limited"
        );
        let later = now + std::time::Duration::from_millis(1100);
        assert!(
            gate.admit(7, "again", later).is_ok(),
            "one a second after that"
        );
        assert_eq!(gate.admit(7, "", later), Err(ChatRefusal::Empty));
        assert_eq!(gate.counts()["rate_limited"], 15);
        assert_eq!(gate.counts()["empty"], 1);
    }
}
