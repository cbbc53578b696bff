//! The strict shape of a filtering use. The cursor keeps, for every parenthesis, the pieces
//! written since the last top-level `AND` ([`Piece`]); an insertion filters only when those
//! pieces say it stands as the value of a whole conjunct `column = value` or `column IN value`
//! (or the value of `lower(...)`, `has(value, column)`, `equals(column, value)`), and the
//! tokens after it ([`Tail`]) finish that conjunct: a column when the value came first, then
//! `AND`, a clause keyword, or the end of the query. Anything else is a doubt.

use super::lexer::{Tok, listed};

/// Most pieces kept per parenthesis: the patterns are shorter, a longer conjunct matches none.
const MAX_PIECES: usize = 8;

/// Functions that keep a pinning comparison pinning when they wrap one side of it
/// (`lower(org) = lower({{String(org)}})`): one argument, in, one value out.
const WRAPPERS: &str = "LOWER UPPER LOWERUTF8 UPPERUTF8 TOSTRING";

/// Words that are no column (literals, operators, clause keywords).
const KEYWORDS: &str = "NULL TRUE FALSE NAN INF NOT AND OR XOR CASE WHEN THEN ELSE END INTERVAL \
     DISTINCT ALL ANY EXISTS IS IN LIKE ILIKE BETWEEN AS GLOBAL ASC DESC NULLS FIRST LAST COLLATE TOP \
     SELECT FROM WHERE PREWHERE HAVING QUALIFY GROUP ORDER BY LIMIT OFFSET SETTINGS FORMAT UNION EXCEPT \
     INTERSECT JOIN ON USING WITH ARRAY LEFT RIGHT FULL INNER OUTER CROSS SEMI ANTI ASOF PASTE WINDOW \
     FINAL SAMPLE INTO";

/// Words that end a conjunct: the next one, or the clause.
const CONJUNCT_ENDS: &str = "AND GROUP ORDER LIMIT SETTINGS HAVING QUALIFY WINDOW FORMAT UNION EXCEPT \
     INTERSECT WHERE PREWHERE JOIN LEFT RIGHT FULL INNER CROSS PASTE ASOF INTO";

/// What the conjunct log records of a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Piece {
    /// A bare or quoted name, as written.
    Ident(String),
    Keyword,
    Dot,
    /// `=` or `==`.
    Eq,
    In,
    /// Any other operator.
    Op,
    /// A literal, a parenthesis, a bracket, a subquery.
    Value,
    Insert,
    /// A function call; the column when it is a [`WRAPPERS`] function of one plain column.
    Call(Option<String>),
    /// Template branches wrote different pieces.
    Unclear,
}

/// The pieces of one parenthesis since its last conjunct boundary.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Log {
    pub pieces: Vec<Piece>,
    /// `BETWEEN`s whose `AND` is still to come (that `AND` is not a boundary).
    between: u32,
}

impl Log {
    pub(super) fn push(&mut self, piece: Piece) {
        if self.pieces.len() < MAX_PIECES {
            self.pieces.push(piece);
        }
    }

    pub(super) fn clear(&mut self) {
        self.pieces.clear();
        self.between = 0;
    }

    /// Records a token of this parenthesis (not parentheses, commas or `AS`, which the cursor
    /// handles). `conjunctive`: whether an `AND` here separates conjuncts.
    pub(super) fn record(&mut self, token: &Tok<'_>, conjunctive: bool) {
        let piece = match token {
            Tok::Word(word) => {
                let upper = word.to_ascii_uppercase();
                match upper.as_str() {
                    "AND" if conjunctive && self.between == 0 => return self.clear(),
                    "AND" if self.between > 0 => {
                        self.between -= 1;
                        Piece::Keyword
                    }
                    "BETWEEN" => {
                        self.between += 1;
                        Piece::Keyword
                    }
                    "IN" => Piece::In,
                    _ if listed(KEYWORDS, &upper) => Piece::Keyword,
                    _ => Piece::Ident((*word).to_owned()),
                }
            }
            Tok::Name(name) => Piece::Ident(name.clone()),
            Tok::Op("=" | "==") => Piece::Eq,
            Tok::Op(_) => Piece::Op,
            Tok::Dot => Piece::Dot,
            Tok::Insert(_) => Piece::Insert,
            Tok::Value => Piece::Value,
            Tok::Open | Tok::Close | Tok::OpenBracket | Tok::CloseBracket | Tok::Comma => return,
        };
        self.push(piece);
    }

    /// The same log, or an unclear one, after template branches.
    pub(super) fn merge(&mut self, other: &Self) {
        if self != other {
            self.pieces = vec![Piece::Unclear];
            self.between = self.between.max(other.between);
        }
    }
}

/// The names of a plain column (`org`, `t.org`) written by exactly `pieces`.
pub(super) fn column(pieces: &[Piece]) -> Option<Vec<String>> {
    match pieces {
        [Piece::Ident(name)] => Some(vec![name.clone()]),
        [Piece::Ident(table), Piece::Dot, Piece::Ident(name)] => Some(vec![table.clone(), name.clone()]),
        _ => None,
    }
}

/// The column side of a comparison: a plain column, or a wrapper function of one.
pub(super) fn column_side(pieces: &[Piece]) -> Option<Vec<String>> {
    match pieces {
        [Piece::Call(Some(name))] => Some(vec![name.clone()]),
        _ => column(pieces),
    }
}

/// The column a value inserted after `pieces` is compared with (`org =`, `t.org IN`,
/// `lower(org) =`), if that is all they hold.
pub(super) fn compared_column(pieces: &[Piece], allow_in: bool) -> Option<Vec<String>> {
    match pieces.split_last() {
        Some((Piece::Eq, side)) => column_side(side),
        Some((Piece::In, side)) if allow_in => column(side),
        _ => None,
    }
}

pub(super) fn is_wrapper(upper: &str) -> bool {
    listed(WRAPPERS, upper)
}

/// Where a parenthesis of a function call stands in its parent's conjunct.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) enum Lead {
    /// At the start of a whole conjunct.
    Start,
    /// Right after `column =`: the names of that column.
    Compared(Vec<String>),
    #[default]
    Elsewhere,
}

/// What a `)` closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Closing {
    /// A grouping parenthesis that is a whole conjunct of a conjunctive parent.
    Conjunct,
    /// A subquery.
    Query,
    Other,
}

/// A token, as far as the tails care.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Next {
    EndsConjunct,
    Close(Closing),
    Eq,
    Comma,
    Dot,
    Open,
    /// A possible column name.
    Name(String),
    Other,
}

impl Next {
    pub(super) fn of(token: &Tok<'_>, closing: Closing) -> Self {
        match token {
            Tok::Word(word) => {
                let upper = word.to_ascii_uppercase();
                if listed(CONJUNCT_ENDS, &upper) {
                    Self::EndsConjunct
                } else if listed(KEYWORDS, &upper) {
                    Self::Other
                } else {
                    Self::Name((*word).to_owned())
                }
            }
            Tok::Name(name) => Self::Name(name.clone()),
            Tok::Op(";") => Self::EndsConjunct,
            Tok::Op("=" | "==") => Self::Eq,
            Tok::Close => Self::Close(closing),
            Tok::Comma => Self::Comma,
            Tok::Dot => Self::Dot,
            Tok::Open => Self::Open,
            Tok::Op(_) | Tok::Value | Tok::Insert(_) | Tok::OpenBracket | Tok::CloseBracket => Self::Other,
        }
    }
}

/// What must follow an inserted value for its conjunct to be whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Tail {
    /// The conjunct ends next.
    End,
    /// `=`, then a column (the value came first).
    Eq,
    /// A column; `closed`: inside a call, whose `)` must then follow.
    Column { closed: bool },
    /// A name was read; it may be qualified, or (`may_wrap`) be a wrapper function.
    Named { closed: bool, may_wrap: bool },
    /// `,` then a column then `)` (`has(value, column)`).
    Comma,
    /// `)`, then `=` and a column (`then_eq`), or the end of the conjunct.
    Close { then_eq: bool },
}

/// The outcome of one token for a tail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Step {
    Done,
    Wait(Tail),
    /// As `Wait`, and the name is a column the use relies on.
    Column(String, Tail),
    Fail,
}

impl Tail {
    /// Whether the SQL may end while this tail waits.
    pub(super) fn may_end(self) -> bool {
        matches!(self, Self::End | Self::Named { closed: false, .. })
    }

    pub(super) fn step(self, next: &Next) -> Step {
        match (self, next) {
            (Self::End, Next::EndsConjunct | Next::Close(Closing::Query)) => Step::Done,
            (Self::End, Next::Close(Closing::Conjunct))
            | (Self::Named { closed: true, .. }, Next::Close(Closing::Other)) => Step::Wait(Self::End),
            (Self::Eq, Next::Eq) => Step::Wait(Self::Column { closed: false }),
            (Self::Column { closed }, Next::Name(name)) => {
                let may_wrap = !closed && is_wrapper(&name.to_ascii_uppercase());
                Step::Column(name.clone(), Self::Named { closed, may_wrap })
            }
            (Self::Named { closed, .. }, Next::Dot) => Step::Wait(Self::Column { closed }),
            (Self::Named { may_wrap: true, .. }, Next::Open) | (Self::Comma, Next::Comma) => {
                Step::Wait(Self::Column { closed: true })
            }
            (Self::Named { closed: false, .. }, next) => Self::End.step(next),
            (Self::Close { then_eq }, Next::Close(Closing::Other)) => {
                Step::Wait(if then_eq { Self::Eq } else { Self::End })
            }
            _ => Step::Fail,
        }
    }
}

/// Which reading of an insertion a tail checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Reading {
    /// The insertion is a value compared with a column.
    Value,
    /// The insertion is a whole condition (`sql_and()`).
    Condition,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(mut tail: Tail, tokens: &[Next]) -> bool {
        for next in tokens {
            match tail.step(next) {
                Step::Done => return true,
                Step::Wait(found) | Step::Column(_, found) => tail = found,
                Step::Fail => return false,
            }
        }
        tail.may_end()
    }

    #[test]
    fn a_tail_accepts_only_a_whole_conjunct() {
        let name = |text: &str| Next::Name(text.to_owned());
        assert!(run(Tail::End, &[]));
        assert!(run(Tail::End, &[Next::EndsConjunct]));
        assert!(run(Tail::End, &[Next::Close(Closing::Conjunct), Next::Close(Closing::Query)]));
        assert!(!run(Tail::End, &[Next::Eq]));
        assert!(!run(Tail::End, &[Next::Close(Closing::Other)]));
        assert!(run(Tail::Eq, &[Next::Eq, name("t"), Next::Dot, name("org")]));
        assert!(run(
            Tail::Eq,
            &[Next::Eq, name("lower"), Next::Open, name("org"), Next::Close(Closing::Other)]
        ));
        assert!(!run(Tail::Eq, &[Next::Eq, Next::Other]));
        assert!(!run(Tail::Eq, &[Next::Other]));
        assert!(run(Tail::Comma, &[Next::Comma, name("org"), Next::Close(Closing::Other)]));
        assert!(!run(Tail::Close { then_eq: false }, &[Next::Close(Closing::Other), Next::Eq]));
        assert!(!run(Tail::Eq, &[Next::Eq, name("org"), Next::Other]));
    }

    #[test]
    fn a_log_resets_at_and_but_not_inside_between() {
        let mut log = Log::default();
        for token in [Tok::Word("a"), Tok::Word("BETWEEN"), Tok::Value, Tok::Word("AND"), Tok::Value] {
            log.record(&token, true);
        }
        assert_eq!(log.pieces.len(), 5);
        log.record(&Tok::Word("and"), true);
        log.record(&Tok::Word("org"), true);
        log.record(&Tok::Op("="), true);
        assert_eq!(compared_column(&log.pieces, true), Some(vec!["org".to_owned()]));
        assert_eq!(compared_column(&[Piece::Value, Piece::Eq], true), None);
    }
}
