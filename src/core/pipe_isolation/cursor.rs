//! The SQL cursor: where the tokens of a node stand in the query (which SELECT, which clause,
//! which parenthesis), fed token by token. It records the query's structure in a [`Builder`]
//! and gives every `{{ }}` insertion its [`Role`].

use super::conjunct::{
    Closing, Lead, Log, Next, Piece, Reading, Step, Tail, column, compared_column, is_wrapper,
};
use super::lexer::{Mode, Tok, is_word_byte, lex, listed};
use super::sql::{Bits, Builder, Member, PendingRole, Role, SourceKind, Weak};

/// Deepest nesting of parentheses and brackets.
const MAX_PAREN_DEPTH: usize = 128;

/// Most insertions waiting for the next SQL token at once.
const MAX_WAITING: usize = 1024;

/// Words that end a FROM item rather than name a table.
const NOT_A_TABLE: &str = "SELECT WHERE PREWHERE HAVING GROUP ORDER LIMIT OFFSET SETTINGS FORMAT \
     UNION EXCEPT INTERSECT JOIN ON USING LEFT RIGHT FULL INNER OUTER CROSS ARRAY GLOBAL ANY ALL SEMI \
     ANTI ASOF PASTE WINDOW QUALIFY FINAL SAMPLE AS INTO";

/// Join modifiers that make an `ON` condition keep rows it does not match.
const OUTER_JOIN_WORDS: &[&str] = &["LEFT", "RIGHT", "FULL", "ANTI"];

/// Other join modifiers.
const JOIN_WORDS: &[&str] =
    &["INNER", "OUTER", "CROSS", "ANY", "ALL", "SEMI", "ASOF", "GLOBAL", "PASTE", "ARRAY"];

/// Operators after or before which a value does not pin rows to it.
const WEAK_OPERATORS: &[&str] = &["!=", "<>", "<", ">", "<=", ">=", "+", "-", "*", "/", "%", "||"];

/// Words after which a value does not pin rows to it.
const WEAK_WORDS: &[&str] = &["LIKE", "ILIKE", "BETWEEN", "INTERVAL", "IS", "NOT"];

/// Functions whose result still pins rows to a value passed to them (`has(orgs, org_id)`,
/// `lower(x)`, casts). Inside any other function (`or()`, `if()`, `notIn()`, `arrayFilter()`...)
/// a value may not decide which rows pass.
const PINNING_FUNCTIONS: &str = "HAS HASANY HASALL EQUALS IN GLOBALIN AND LOWER UPPER LOWERUTF8 \
     UPPERUTF8 TOSTRING TOLOWCARDINALITY TOFIXEDSTRING TOUUID ASSUMENOTNULL TUPLE ARRAY CAST";

/// Keywords after which a parenthesis groups a condition or lists values (not a call).
const GROUPING_KEYWORDS: &str = "AND OR XOR NOT WHERE PREWHERE HAVING ON USING QUALIFY IN WHEN THEN \
     ELSE SELECT BY FROM JOIN AS WITH EXISTS UNION ALL DISTINCT LIMIT";

/// The clause a token sits in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Clause {
    Start,
    With,
    SelectList,
    From,
    Join,
    ArrayJoin,
    On,
    Using,
    Where,
    Prewhere,
    Having,
    Qualify,
    GroupBy,
    OrderBy,
    Limit,
    Settings,
    Other,
    SetOp,
    /// Template branches left the clause unclear.
    Mixed,
}

impl Clause {
    /// Whether the clause filters rows (WHERE, PREWHERE, HAVING, QUALIFY, ON, USING).
    fn filters(self) -> bool {
        matches!(self, Self::Where | Self::Prewhere | Self::Having | Self::Qualify | Self::On | Self::Using)
    }
}

/// What a subquery opening here would be.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Intent {
    Source,
    Member,
    Cte(String),
    Scalar,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    Query(usize),
    /// A parenthesised expression or argument list; `carry` passes a subquery's role on to a
    /// parenthesis right inside (`FROM ((SELECT ...))`).
    Expr {
        carry: Option<Intent>,
    },
    Bracket,
    /// A parenthesis whose first token will tell whether it holds a subquery.
    Pending(Intent),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SourceState {
    None,
    Expect,
    Named,
    Qualify,
    After,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum WithState {
    None,
    Name(String),
    As(String),
}

#[derive(Clone, Debug)]
struct Frame {
    kind: Kind,
    /// Query frames: the SELECT(s) being written (several after branches that each start one).
    selects: Bits,
    clause: Clause,
    source: SourceState,
    last_sources: Vec<usize>,
    /// Filtering uses inside this parenthesis (weakened if it is then compared).
    uses: Vec<usize>,
    /// Whether the parenthesis holds a function's arguments (rather than grouping).
    call: bool,
    outer_join: bool,
    join_outer_pending: bool,
    join_array_pending: bool,
    with: WithState,
    after_setop: bool,
    group: usize,
    negating: bool,
    case_depth: u32,
    weak: Option<Weak>,
    /// What this parenthesis wrote since its last conjunct boundary (or argument, or item).
    log: Log,
    /// A grouping parenthesis that is a whole conjunct of a conjunctive parent.
    conjunctive: bool,
    /// A call's function, upper-cased.
    func: String,
    lead: Lead,
    /// A call's commas so far, and its first argument when that is a plain column.
    args: usize,
    first_arg: Option<Vec<String>>,
    /// An `AS` was read: the next name is an alias.
    after_as: bool,
}

impl Frame {
    fn new(kind: Kind, group: usize, weak: Option<Weak>) -> Self {
        Self {
            kind,
            selects: 0,
            clause: Clause::Start,
            source: SourceState::None,
            last_sources: Vec::new(),
            uses: Vec::new(),
            call: false,
            outer_join: false,
            join_outer_pending: false,
            join_array_pending: false,
            with: WithState::None,
            after_setop: false,
            group,
            negating: false,
            case_depth: 0,
            weak,
            log: Log::default(),
            conjunctive: false,
            func: String::new(),
            lead: Lead::Elsewhere,
            args: 0,
            first_arg: None,
            after_as: false,
        }
    }

    fn in_from(&self) -> bool {
        matches!(self.clause, Clause::From | Clause::Join)
    }

    fn in_join_area(&self) -> bool {
        matches!(self.clause, Clause::From | Clause::Join | Clause::On | Clause::Using | Clause::ArrayJoin)
    }
}

/// A previous significant token, as far as the cursor cares.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Prev {
    Start,
    /// Upper-cased.
    Word(String),
    Op(String),
    Punct,
    Value,
    Insert,
    /// Template branches ended on different tokens.
    Unclear,
}

/// The cursor; cloned at the start of every template branch.
#[derive(Clone, Debug)]
pub(super) struct Cursor {
    mode: Mode,
    frames: Vec<Frame>,
    prev: [Prev; 2],
    /// Insertions waiting for the next token to tell whether they are compared loosely: the
    /// leaf, whether an `=` followed it, whether a comparison preceded it.
    pending_next: Vec<(usize, bool, bool)>,
    /// Filtering uses inside a parenthesis that just closed: weakened if an operator follows
    /// (only a loose one after a function's arguments: `lower(x) = org_id` still pins).
    pending_close: Vec<usize>,
    pending_close_call: bool,
    /// Filtering uses whose conjunct is still being read: what must follow them.
    tails: Vec<(usize, Reading, Tail)>,
    started: bool,
    ends_in_word: bool,
}

impl Cursor {
    pub(super) fn new(builder: &mut Builder) -> Self {
        let group = builder.new_group();
        Self {
            mode: Mode::Code,
            frames: vec![Frame::new(Kind::Query(0), group, None)],
            prev: [Prev::Start, Prev::Start],
            pending_next: Vec::new(),
            pending_close: Vec::new(),
            pending_close_call: false,
            tails: Vec::new(),
            started: false,
            ends_in_word: false,
        }
    }

    /// Feeds a piece of SQL text.
    pub(super) fn text(&mut self, text: &str, leaf: usize, builder: &mut Builder) -> Result<(), String> {
        builder.leaf = leaf;
        let glued =
            self.ends_in_word && self.mode == Mode::Code && text.bytes().next().is_some_and(is_word_byte);
        if glued && self.top().source == SourceState::Named {
            let glued_sources = self.top().last_sources.clone();
            for source in glued_sources {
                builder.set_source(source, SourceKind::Dynamic(GLUED_NAME));
            }
        }
        let mut mode = std::mem::replace(&mut self.mode, Mode::Code);
        lex(text, &mut mode, &mut |token| self.token(token, builder))?;
        self.mode = mode;
        self.ends_in_word = self.mode == Mode::Code && text.bytes().last().is_some_and(is_word_byte);
        Ok(())
    }

    /// Feeds a `{{ }}` insertion.
    pub(super) fn insert(&mut self, leaf: usize, builder: &mut Builder) -> Result<(), String> {
        builder.leaf = leaf;
        self.ends_in_word = false;
        match self.mode {
            Mode::Code => self.token(Tok::Insert(leaf), builder),
            Mode::LineComment | Mode::BlockComment(_) => {
                builder.set_role(leaf, PendingRole::Done(Role::Comment));
                Ok(())
            }
            Mode::Literal { .. } | Mode::Heredoc(_) => Err(IN_LITERAL.to_owned()),
            Mode::QuotedName { .. } => Err("inserts a template value inside a quoted SQL name".to_owned()),
        }
    }

    /// Checks that the SQL ends complete.
    pub(super) fn finish(&self) -> Result<(), String> {
        match self.mode {
            Mode::Code | Mode::LineComment => {}
            Mode::BlockComment(_) => return Err("a /* comment is not closed".to_owned()),
            Mode::Literal { .. } | Mode::QuotedName { .. } | Mode::Heredoc(_) => {
                return Err("a SQL string or quoted name is not closed".to_owned());
            }
        }
        if self.frames.len() > 1 {
            return Err("a parenthesis or bracket is not closed".to_owned());
        }
        if !self.started {
            return Err("the node has no SQL".to_owned());
        }
        Ok(())
    }

    fn top(&self) -> &Frame {
        &self.frames[self.frames.len() - 1]
    }

    fn top_mut(&mut self) -> &mut Frame {
        let last = self.frames.len() - 1;
        &mut self.frames[last]
    }

    /// The innermost query frame at or below `from`.
    fn query_frame(&self, from: usize) -> usize {
        (0..=from).rev().find(|at| matches!(self.frames[*at].kind, Kind::Query(_))).unwrap_or(0)
    }

    fn token(&mut self, token: Tok<'_>, builder: &mut Builder) -> Result<(), String> {
        self.check_next(&token, builder);
        self.check_tails(&token, builder);
        if !self.started && self.frames.len() == 1 {
            if let Tok::Insert(leaf) = token {
                builder.set_role(leaf, PendingRole::Done(Role::Leading));
                return Ok(());
            }
            check_start(&token)?;
            self.started = true;
        }
        if matches!(self.top().kind, Kind::Pending(_)) {
            self.resolve_pending(&token, builder);
        }
        if !matches!(&token, Tok::Word(word) if is_join_word(word)) {
            let top = self.top_mut();
            top.join_outer_pending = false;
            top.join_array_pending = false;
        }
        let prev = match &token {
            Tok::Word(word) => Prev::Word(word.to_ascii_uppercase()),
            Tok::Op(op) => Prev::Op((*op).to_owned()),
            Tok::Value | Tok::Name(_) => Prev::Value,
            Tok::Insert(_) => Prev::Insert,
            Tok::Open | Tok::Close | Tok::OpenBracket | Tok::CloseBracket | Tok::Comma | Tok::Dot => {
                Prev::Punct
            }
        };
        self.alias_name(&token, builder);
        let is_as = matches!(&token, Tok::Word(word) if word.eq_ignore_ascii_case("AS"));
        if is_as {
            self.as_word();
        } else if !matches!(token, Tok::Insert(_)) {
            let conjunctive = self.is_conjunctive(self.frames.len() - 1);
            self.top_mut().log.record(&token, conjunctive);
        }
        match token {
            Tok::Open => self.open(builder)?,
            Tok::Close => self.close(builder)?,
            Tok::OpenBracket => self.push(Kind::Bracket, None, builder)?,
            Tok::CloseBracket => self.close_bracket()?,
            Tok::Word(word) => self.word(word, builder),
            Tok::Name(name) => self.quoted_name(name, builder),
            Tok::Comma => self.comma(builder),
            Tok::Dot => self.dot(),
            Tok::Insert(leaf) => {
                self.inserted(leaf, builder);
                self.top_mut().log.push(Piece::Insert);
            }
            Tok::Value | Tok::Op(_) => self.operand(),
        }
        let before = std::mem::replace(&mut self.prev[0], prev);
        self.prev[1] = before;
        Ok(())
    }

    /// Settles insertions that wait for the token after them.
    fn check_next(&mut self, token: &Tok<'_>, builder: &mut Builder) {
        // The token is classified once: along a path that skips many blocks, many insertions
        // may wait for it.
        let loose = loose_operator(token);
        let equals = matches!(token, Tok::Op("=" | "=="));
        let inserted = matches!(token, Tok::Insert(_));
        let mut still = Vec::new();
        for (leaf, saw_equals, compared) in std::mem::take(&mut self.pending_next) {
            if saw_equals {
                if inserted {
                    builder.weaken(leaf, Weak::TemplateOperand);
                }
            } else if equals && compared {
                builder.weaken(leaf, Weak::Operator("=".to_owned()));
            } else if equals {
                still.push((leaf, true, compared));
            } else if let Some(weak) = &loose {
                builder.weaken(leaf, weak.clone());
            }
        }
        self.pending_next = still;
        let closed = std::mem::take(&mut self.pending_close);
        let grouped_then_compared = !self.pending_close_call && matches!(token, Tok::Op(op) if *op != ";");
        if let Some(weak) = loose.or_else(|| grouped_then_compared.then_some(Weak::Unclear)) {
            for leaf in closed {
                builder.weaken(leaf, weak.clone());
            }
        }
    }

    fn push(&mut self, kind: Kind, weak: Option<Weak>, builder: &mut Builder) -> Result<(), String> {
        if self.frames.len() >= MAX_PAREN_DEPTH {
            return Err(format!("parentheses nest deeper than {MAX_PAREN_DEPTH}"));
        }
        let group = builder.new_group();
        self.frames.push(Frame::new(kind, group, weak));
        Ok(())
    }

    fn open(&mut self, builder: &mut Builder) -> Result<(), String> {
        let weak = self.weak_before_paren();
        let top = self.top();
        let intent = match &top.kind {
            Kind::Query(_) if top.in_from() && top.source == SourceState::Named => {
                let function = match &self.prev[0] {
                    Prev::Word(word) => word.to_ascii_lowercase(),
                    _ => String::new(),
                };
                let sources = top.last_sources.clone();
                for source in sources {
                    builder.set_source(source, SourceKind::TableFunction(function.clone()));
                }
                self.top_mut().source = SourceState::After;
                return self.push(Kind::Expr { carry: None }, weak, builder);
            }
            Kind::Query(_) if top.in_from() && top.source == SourceState::Expect => Intent::Source,
            Kind::Query(_) if matches!(top.clause, Clause::Start | Clause::SetOp) => Intent::Member,
            Kind::Query(_) => match (&top.clause, &top.with) {
                (Clause::With, WithState::As(name)) if !name.is_empty() => Intent::Cte(name.clone()),
                _ => Intent::Scalar,
            },
            Kind::Expr { carry: Some(intent) } => intent.clone(),
            _ => Intent::Scalar,
        };
        if let Kind::Expr { carry } = &mut self.top_mut().kind {
            *carry = None;
        }
        let call = matches!(&self.prev[0], Prev::Word(word) if !listed(GROUPING_KEYWORDS, word));
        let (func, lead, conjunctive) = self.opening(call);
        self.push(Kind::Pending(intent), weak, builder)?;
        let top = self.top_mut();
        top.call = call;
        top.func = func;
        top.lead = lead;
        top.conjunctive = conjunctive;
        Ok(())
    }

    fn resolve_pending(&mut self, token: &Tok<'_>, builder: &mut Builder) {
        let last = self.frames.len() - 1;
        let Kind::Pending(intent) = self.frames[last].kind.clone() else { return };
        let parent = self.query_frame(last.saturating_sub(1));
        if starts_query(token) {
            let query = builder.new_query();
            match intent {
                Intent::Source => self.add_source(parent, &SourceKind::Subquery(query), builder),
                Intent::Member => {
                    if let Kind::Query(outer) = self.frames[parent].kind {
                        builder.add_member(outer, Member::Query(query));
                    }
                    self.frames[parent].after_setop = false;
                }
                Intent::Cte(name) => builder.shape.ctes.push((name, query)),
                Intent::Scalar => {
                    let frame = &self.frames[parent];
                    if let (Kind::Query(outer), false) = (&frame.kind, frame.clause.filters()) {
                        builder.expose(*outer, query);
                    }
                }
            }
            self.frames[last].kind = Kind::Query(query);
            self.frames[last].weak = None;
        } else if matches!(token, Tok::Open) {
            self.frames[last].kind = Kind::Expr { carry: Some(intent) };
        } else {
            self.frames[last].kind = Kind::Expr { carry: None };
            if intent == Intent::Source {
                self.add_source(parent, &SourceKind::Dynamic(PAREN_SOURCE), builder);
            }
        }
    }

    fn close(&mut self, builder: &mut Builder) -> Result<(), String> {
        if self.frames.len() <= 1 {
            return Err("a `)` closes no parenthesis".to_owned());
        }
        if self.top().kind == Kind::Bracket {
            return Err("a `)` closes a `[`".to_owned());
        }
        if let Some(mut closed) = self.frames.pop() {
            if matches!(closed.kind, Kind::Query(_)) && closed.clause == Clause::SelectList {
                finish_item(&closed, builder);
            }
            let wrapped = (closed.call && is_wrapper(&closed.func) && closed.args == 0)
                .then(|| column(&closed.log.pieces).and_then(|names| names.last().cloned()))
                .flatten();
            let piece = if closed.call { Piece::Call(wrapped) } else { Piece::Value };
            self.top_mut().log.push(piece);
            self.pending_close = std::mem::take(&mut closed.uses);
            self.pending_close_call = closed.call;
        }
        let top = self.top_mut();
        if top.in_from() {
            top.source = SourceState::After;
        }
        Ok(())
    }

    fn close_bracket(&mut self) -> Result<(), String> {
        if self.top().kind != Kind::Bracket {
            return Err("a `]` closes no `[`".to_owned());
        }
        self.frames.pop();
        self.top_mut().log.push(Piece::Value);
        Ok(())
    }

    fn add_source(&mut self, frame: usize, kind: &SourceKind, builder: &mut Builder) {
        let selects = self.frames[frame].selects;
        let added = builder.add_sources(selects, kind);
        self.frames[frame].last_sources = added;
    }

    fn word(&mut self, word: &str, builder: &mut Builder) {
        let upper = word.to_ascii_uppercase();
        let prefix = self.prefix_position();
        let top = self.top_mut();
        match upper.as_str() {
            "AND" => top.negating = false,
            "OR" | "XOR" => {
                top.negating = false;
                builder.flag_or(top.group);
            }
            "NOT" if prefix => top.negating = true,
            "CASE" => top.case_depth += 1,
            "END" if top.case_depth > 0 => top.case_depth -= 1,
            _ if matches!(top.kind, Kind::Query(_)) => self.query_word(word, &upper, builder),
            _ => {}
        }
    }

    fn set_clause(&mut self, clause: Clause, builder: &mut Builder) {
        let group = builder.new_group();
        let last = self.frames.len() - 1;
        if matches!(self.frames[last].kind, Kind::Query(_)) && self.frames[last].clause == Clause::SelectList
        {
            finish_item(&self.frames[last], builder);
        }
        let top = self.top_mut();
        top.log.clear();
        top.clause = clause;
        top.group = group;
        top.negating = false;
        top.case_depth = 0;
        top.source = if matches!(clause, Clause::From | Clause::Join) {
            SourceState::Expect
        } else {
            SourceState::None
        };
        top.with = WithState::None;
        top.last_sources.clear();
    }

    fn query_word(&mut self, word: &str, upper: &str, builder: &mut Builder) {
        let top = self.top();
        if top.in_from() && top.source == SourceState::Expect && !listed(NOT_A_TABLE, upper) {
            let last = self.frames.len() - 1;
            self.add_source(last, &SourceKind::Table(word.to_owned()), builder);
            self.top_mut().source = SourceState::Named;
            return;
        }
        if top.source == SourceState::Qualify {
            self.qualify(word, builder);
            return;
        }
        if self.clause_word(upper, builder) {
            return;
        }
        let top = self.top_mut();
        if top.in_join_area() && OUTER_JOIN_WORDS.contains(&upper) {
            top.join_outer_pending = true;
        } else if top.in_join_area() && upper == "ARRAY" {
            top.join_array_pending = true;
        } else if top.clause == Clause::With && upper == "AS" {
            top.with = match &top.with {
                WithState::Name(name) => WithState::As(name.clone()),
                _ => WithState::As(String::new()),
            };
        } else if top.clause == Clause::With {
            if matches!(top.with, WithState::As(_)) {
                builder.add_alias(Bits::MAX, word);
            }
            top.with = WithState::Name(word.to_owned());
        } else if top.source == SourceState::Named {
            top.source = SourceState::After;
        }
    }

    /// Handles a word that starts a clause; false when `upper` is no such word here.
    fn clause_word(&mut self, upper: &str, builder: &mut Builder) -> bool {
        let top = self.top();
        let clause = match upper {
            "SELECT" => {
                self.select(builder);
                return true;
            }
            "WITH" if top.selects == 0 || top.after_setop => Clause::With,
            "FROM" if top.selects != 0 => Clause::From,
            "JOIN" => {
                let (outer, array) = (top.join_outer_pending, top.join_array_pending);
                self.set_clause(if array { Clause::ArrayJoin } else { Clause::Join }, builder);
                let top = self.top_mut();
                top.outer_join = outer;
                if array {
                    top.source = SourceState::None;
                }
                return true;
            }
            "ON" | "USING" if top.clause == Clause::Join => {
                let outer = top.outer_join;
                self.set_clause(if upper == "ON" { Clause::On } else { Clause::Using }, builder);
                self.top_mut().outer_join = outer;
                return true;
            }
            "WHERE" => Clause::Where,
            "PREWHERE" => Clause::Prewhere,
            "HAVING" => Clause::Having,
            "QUALIFY" => Clause::Qualify,
            "GROUP" => Clause::GroupBy,
            "ORDER" => Clause::OrderBy,
            "LIMIT" | "OFFSET" => Clause::Limit,
            "SETTINGS" => Clause::Settings,
            "FORMAT" | "INTO" | "WINDOW" => Clause::Other,
            "UNION" | "EXCEPT" | "INTERSECT" => {
                self.set_clause(Clause::SetOp, builder);
                self.top_mut().after_setop = true;
                return true;
            }
            _ => return false,
        };
        self.set_clause(clause, builder);
        true
    }

    fn select(&mut self, builder: &mut Builder) {
        let Kind::Query(query) = self.top().kind else { return };
        let select = builder.new_select(query);
        self.set_clause(Clause::SelectList, builder);
        let top = self.top_mut();
        top.selects = select;
        top.after_setop = false;
    }

    fn qualify(&mut self, word: &str, builder: &mut Builder) {
        let sources = self.top().last_sources.clone();
        for source in sources {
            builder.qualify_source(source, word);
        }
        self.top_mut().source = SourceState::Named;
    }

    fn quoted_name(&mut self, name: String, builder: &mut Builder) {
        let top = self.top();
        if !matches!(top.kind, Kind::Query(_)) {
            return;
        }
        if top.in_from() && top.source == SourceState::Expect {
            let last = self.frames.len() - 1;
            self.add_source(last, &SourceKind::Table(name), builder);
            self.top_mut().source = SourceState::Named;
        } else if top.source == SourceState::Qualify {
            self.qualify(&name, builder);
        } else if top.clause == Clause::With && matches!(top.with, WithState::As(_)) {
            builder.add_alias(Bits::MAX, &name);
            self.top_mut().with = WithState::Name(name);
        } else if top.clause == Clause::With && top.with == WithState::None {
            self.top_mut().with = WithState::Name(name);
        } else {
            self.operand();
        }
    }

    fn comma(&mut self, builder: &mut Builder) {
        let last = self.frames.len() - 1;
        let frame = &self.frames[last];
        if matches!(frame.kind, Kind::Query(_)) && frame.clause == Clause::SelectList {
            finish_item(frame, builder);
        }
        let top = self.top_mut();
        if top.call {
            if top.args == 0 {
                top.first_arg = column(&top.log.pieces);
            }
            top.args = top.args.saturating_add(1);
        } else if !matches!(top.kind, Kind::Query(_)) {
            top.conjunctive = false;
        }
        top.log.clear();
        top.negating = false;
        if top.clause == Clause::From && matches!(top.kind, Kind::Query(_)) {
            top.source = SourceState::Expect;
        } else if top.clause == Clause::With {
            top.with = WithState::None;
        }
    }

    fn dot(&mut self) {
        let top = self.top_mut();
        if top.source == SourceState::Named {
            top.source = SourceState::Qualify;
        }
    }

    fn operand(&mut self) {
        let top = self.top_mut();
        if top.source == SourceState::Named {
            top.source = SourceState::After;
        }
    }

    /// Records where an insertion stands.
    fn inserted(&mut self, leaf: usize, builder: &mut Builder) {
        let last = self.frames.len() - 1;
        let query = self.query_frame(last);
        let frame = &self.frames[query];
        let role = match frame.clause {
            Clause::From | Clause::Join if query == last => {
                self.add_source(last, &SourceKind::Dynamic(DYNAMIC_TABLE), builder);
                self.top_mut().source = SourceState::After;
                PendingRole::Done(Role::Source)
            }
            clause if clause.filters() => {
                let outer = (frame.outer_join && matches!(frame.clause, Clause::On | Clause::Using))
                    .then_some(Weak::OuterJoin);
                let weak = outer.or_else(|| self.adjacent_weak()).or_else(|| self.chain_weak(query));
                let groups = self.frames[query..].iter().map(|frame| frame.group).collect();
                let selects = frame.selects;
                for inner in &mut self.frames[query + 1..] {
                    inner.uses.push(leaf);
                }
                let (value, condition) = self.strictness(leaf, builder);
                PendingRole::Filter { selects, weak, value, condition, groups }
            }
            Clause::Mixed => PendingRole::Done(Role::Ambiguous),
            _ => PendingRole::Done(Role::Other),
        };
        builder.set_role(leaf, role);
        let compared = matches!(&self.prev[0], Prev::Op(op) if op == "=" || op == "==")
            || matches!(&self.prev[0], Prev::Word(word) if word == "IN");
        self.pending_next.push((leaf, false, compared));
        self.operand();
    }

    /// Whether an `AND` in this frame separates whole conjuncts of a filtering clause.
    fn is_conjunctive(&self, at: usize) -> bool {
        let frame = &self.frames[at];
        match frame.kind {
            Kind::Query(_) => frame.clause.filters() && frame.clause != Clause::Using,
            Kind::Expr { .. } => frame.conjunctive,
            Kind::Bracket | Kind::Pending(_) => false,
        }
    }

    /// For a parenthesis about to open: the function it calls (taken off the parent's log),
    /// where the call stands in the parent's conjunct, and whether a grouping parenthesis is a
    /// whole conjunct.
    fn opening(&mut self, call: bool) -> (String, Lead, bool) {
        let parent = self.frames.len() - 1;
        let conjunctive = self.is_conjunctive(parent);
        let log = &mut self.frames[parent].log;
        if !call {
            return (String::new(), Lead::Elsewhere, conjunctive && log.pieces.is_empty());
        }
        let func = match &self.prev[0] {
            Prev::Word(word) => word.clone(),
            _ => String::new(),
        };
        if matches!(log.pieces.last(), Some(Piece::Ident(_) | Piece::Keyword)) {
            log.pieces.pop();
        }
        let lead = if !conjunctive {
            Lead::Elsewhere
        } else if log.pieces.is_empty() {
            Lead::Start
        } else {
            compared_column(&log.pieces, false).map_or(Lead::Elsewhere, Lead::Compared)
        };
        (func, lead, false)
    }

    /// An `AS`: the next name is an alias, except for a table (FROM, JOIN) or a CTE (WITH).
    fn as_word(&mut self) {
        let query = self.query_frame(self.frames.len() - 1);
        let clause = self.frames[query].clause;
        let table_alias = query == self.frames.len() - 1
            && matches!(clause, Clause::From | Clause::Join | Clause::Start | Clause::SetOp | Clause::With);
        if !table_alias {
            self.top_mut().after_as = true;
        }
    }

    /// Records the alias an `AS` names (`*` when a template value names it).
    fn alias_name(&mut self, token: &Tok<'_>, builder: &mut Builder) {
        let last = self.frames.len() - 1;
        if !std::mem::replace(&mut self.frames[last].after_as, false) {
            return;
        }
        let selects = self.frames[self.query_frame(last)].selects;
        let frame = &self.frames[last];
        let name = match token {
            Tok::Word(word) => (*word).to_owned(),
            Tok::Name(name) => name.clone(),
            Tok::Insert(_) => "*".to_owned(),
            _ => return,
        };
        let item = matches!(frame.kind, Kind::Query(_)) && frame.clause == Clause::SelectList;
        let same_column = column(&frame.log.pieces).is_some_and(|names| names.last() == Some(&name));
        if !(item && same_column) {
            builder.add_alias(selects, &name);
        }
    }

    /// Whether an insertion in a filtering clause can be a strict filtering use, as a value
    /// and as a condition; the tails that must follow it are queued.
    fn strictness(&mut self, leaf: usize, builder: &mut Builder) -> (Option<Weak>, Option<Weak>) {
        let last = self.frames.len() - 1;
        let scope = self
            .frames
            .iter()
            .filter(|frame| matches!(frame.kind, Kind::Query(_)))
            .fold(0, |scope, frame| scope | frame.selects);
        let value = match self.value_tail() {
            Some((tail, columns)) => {
                builder.add_columns(leaf, columns, scope);
                self.tails.push((leaf, Reading::Value, tail));
                None
            }
            None => Some(Weak::NotCompared),
        };
        let condition = if self.is_conjunctive(last) && self.frames[last].log.pieces.is_empty() {
            builder.add_columns(leaf, Vec::new(), scope);
            self.tails.push((leaf, Reading::Condition, Tail::End));
            None
        } else {
            Some(Weak::NotWhole)
        };
        (value, condition)
    }

    /// What must follow a value inserted here, and the column it is compared with so far.
    fn value_tail(&self) -> Option<(Tail, Vec<String>)> {
        let last = self.frames.len() - 1;
        let top = &self.frames[last];
        if self.is_conjunctive(last) {
            if top.log.pieces.is_empty() {
                return Some((Tail::Eq, Vec::new()));
            }
            return compared_column(&top.log.pieces, true).map(|columns| (Tail::End, columns));
        }
        if !top.call || !top.log.pieces.is_empty() {
            return None;
        }
        match (top.func.as_str(), &top.lead, top.args) {
            (func, Lead::Start, 0) if is_wrapper(func) => Some((Tail::Close { then_eq: true }, Vec::new())),
            (func, Lead::Compared(columns), 0) if is_wrapper(func) => {
                Some((Tail::Close { then_eq: false }, columns.clone()))
            }
            ("HAS" | "EQUALS", Lead::Start, 0) => Some((Tail::Comma, Vec::new())),
            ("EQUALS", Lead::Start, 1) => {
                top.first_arg.clone().map(|columns| (Tail::Close { then_eq: false }, columns))
            }
            _ => None,
        }
    }

    /// Moves the waiting tails on by one token.
    fn check_tails(&mut self, token: &Tok<'_>, builder: &mut Builder) {
        if self.tails.is_empty() {
            return;
        }
        let last = self.frames.len() - 1;
        let top = &self.frames[last];
        let closing = match top.kind {
            Kind::Query(_) => Closing::Query,
            Kind::Expr { .. } if top.conjunctive && !top.call => Closing::Conjunct,
            _ => Closing::Other,
        };
        let next = Next::of(token, closing);
        let mut still = Vec::new();
        for (leaf, reading, tail) in std::mem::take(&mut self.tails) {
            match tail.step(&next) {
                Step::Done => {}
                Step::Wait(tail) => still.push((leaf, reading, tail)),
                Step::Column(name, tail) => {
                    builder.add_columns(leaf, vec![name], 0);
                    still.push((leaf, reading, tail));
                }
                Step::Fail => loosen(builder, leaf, reading),
            }
        }
        self.tails = still;
    }

    /// At the end of the SQL: tails still waiting for more, and the last SELECT item.
    pub(super) fn settle(&mut self, builder: &mut Builder) {
        for (leaf, reading, tail) in std::mem::take(&mut self.tails) {
            if !tail.may_end() {
                loosen(builder, leaf, reading);
            }
        }
        let top = self.top();
        if matches!(top.kind, Kind::Query(_)) && top.clause == Clause::SelectList {
            finish_item(top, builder);
        }
    }

    fn chain_weak(&self, from: usize) -> Option<Weak> {
        self.frames[from..].iter().find_map(|frame| {
            if let Some(weak) = &frame.weak {
                Some(weak.clone())
            } else if frame.negating {
                Some(Weak::Not)
            } else if frame.case_depth > 0 {
                Some(Weak::Case)
            } else {
                None
            }
        })
    }

    fn adjacent_weak(&self) -> Option<Weak> {
        match (&self.prev[0], &self.prev[1]) {
            (Prev::Op(op), _) if WEAK_OPERATORS.contains(&op.as_str()) => Some(Weak::Operator(op.clone())),
            (Prev::Op(op), Prev::Insert) if op == "=" || op == "==" => Some(Weak::TemplateOperand),
            (Prev::Word(word), Prev::Word(before)) if word == "IN" && before == "NOT" => {
                Some(Weak::Operator("NOT IN".to_owned()))
            }
            (Prev::Word(word), _) if WEAK_WORDS.contains(&word.as_str()) => {
                Some(Weak::Operator(word.clone()))
            }
            (Prev::Unclear, _) => Some(Weak::Unclear),
            _ => None,
        }
    }

    fn weak_before_paren(&self) -> Option<Weak> {
        match &self.prev[0] {
            Prev::Word(word) if !listed(GROUPING_KEYWORDS, word) => {
                let pinning = listed(PINNING_FUNCTIONS, word)
                    || word.starts_with("TOINT")
                    || word.starts_with("TOUINT");
                (!pinning).then(|| Weak::Function(word.to_ascii_lowercase()))
            }
            Prev::Value | Prev::Insert => Some(Weak::Unclear),
            _ => self.adjacent_weak().filter(|weak| *weak != Weak::Unclear),
        }
    }

    /// Whether a `NOT` here negates what follows (rather than being part of `NOT IN`, `IS NOT`).
    fn prefix_position(&self) -> bool {
        match &self.prev[0] {
            Prev::Start | Prev::Punct | Prev::Op(_) | Prev::Unclear => true,
            Prev::Word(word) => matches!(
                word.as_str(),
                "AND"
                    | "OR"
                    | "XOR"
                    | "NOT"
                    | "WHERE"
                    | "PREWHERE"
                    | "HAVING"
                    | "ON"
                    | "WHEN"
                    | "THEN"
                    | "ELSE"
                    | "QUALIFY"
                    | "SELECT"
            ),
            Prev::Value | Prev::Insert => false,
        }
    }
}

/// Why a FROM item is read as a table named at request time.
pub(super) const DYNAMIC_TABLE: &str =
    "reads a table named at request time (a {{ }} value in FROM or JOIN, such as symbol() or column())";
const GLUED_NAME: &str = "reads a table whose name is assembled from template pieces";
const PAREN_SOURCE: &str = "reads a parenthesised FROM item that is not a plain subquery";
const IN_LITERAL: &str = "inserts a template value inside a SQL string literal ('...{{ }}...'); Tinybird \
                          quotes values itself, so the SQL around it cannot be read";

/// The loose comparison a token after a value makes, if any.
fn loose_operator(token: &Tok<'_>) -> Option<Weak> {
    match token {
        Tok::Op(op) if WEAK_OPERATORS.contains(op) => Some(Weak::Operator((*op).to_owned())),
        Tok::Word(word) if WEAK_WORDS.iter().any(|weak| word.eq_ignore_ascii_case(weak)) => {
            Some(Weak::Operator(word.to_ascii_uppercase()))
        }
        _ => None,
    }
}

fn loosen(builder: &mut Builder, leaf: usize, reading: Reading) {
    let why = match reading {
        Reading::Value => Weak::NotCompared,
        Reading::Condition => Weak::NotWhole,
    };
    builder.loosen(leaf, reading, why);
}

/// At the end of a SELECT item: an alias written without `AS` (`count() c`, `{{v}} org`).
fn finish_item(frame: &Frame, builder: &mut Builder) {
    let pieces = &frame.log.pieces;
    let Some((last, before)) = pieces.split_last() else { return };
    let aliasable = matches!(
        before.last(),
        Some(Piece::Ident(_) | Piece::Call(_) | Piece::Value | Piece::Insert | Piece::Unclear)
    );
    if !aliasable {
        return;
    }
    match last {
        Piece::Ident(name) if column(before).is_none_or(|names| names.last() != Some(name)) => {
            builder.add_alias(frame.selects, name);
        }
        Piece::Insert => builder.add_alias(frame.selects, "*"),
        _ => {}
    }
}

fn is_join_word(word: &str) -> bool {
    let upper = word.to_ascii_uppercase();
    upper == "JOIN" || OUTER_JOIN_WORDS.contains(&upper.as_str()) || JOIN_WORDS.contains(&upper.as_str())
}

/// Whether `token` starts a query (`SELECT` or `WITH`).
fn starts_query(token: &Tok<'_>) -> bool {
    let Tok::Word(word) = token else { return false };
    word.eq_ignore_ascii_case("SELECT") || word.eq_ignore_ascii_case("WITH")
}

fn check_start(token: &Tok<'_>) -> Result<(), String> {
    match token {
        Tok::Open => Ok(()),
        _ if starts_query(token) => Ok(()),
        Tok::Word(word) => {
            let shown = crate::core::redact::prefix(word, 24);
            Err(format!("the node's SQL is not a SELECT query (it starts with `{shown}`)"))
        }
        _ => Err("the node's SQL is not a SELECT query".to_owned()),
    }
}

/// Merges the cursors at the ends of a block's branches.
pub(super) fn merge(cursors: Vec<Cursor>, builder: &mut Builder) -> Result<Cursor, String> {
    let mut cursors = cursors.into_iter();
    let Some(mut merged) = cursors.next() else { return Err("a template block has no branch".to_owned()) };
    for other in cursors {
        if other.mode != merged.mode {
            return Err(
                "a SQL string, quoted name or comment starts in one template branch and ends outside it"
                    .to_owned(),
            );
        }
        if other.frames.len() != merged.frames.len() {
            return Err("a parenthesis opens or closes inside one template branch only".to_owned());
        }
        for (frame, theirs) in merged.frames.iter_mut().zip(other.frames) {
            merge_frame(frame, theirs, builder)?;
        }
        for (at, prev) in other.prev.into_iter().enumerate() {
            if merged.prev[at] != prev {
                merged.prev[at] = Prev::Unclear;
            }
        }
        union(&mut merged.pending_next, other.pending_next);
        union(&mut merged.pending_close, other.pending_close);
        union(&mut merged.tails, other.tails);
        if merged.tails.len() > MAX_WAITING {
            return Err(format!(
                "more than {MAX_WAITING} template values wait for the SQL after them (one per skipped block)"
            ));
        }
        if merged.pending_next.len() + merged.pending_close.len() > MAX_WAITING {
            return Err(format!(
                "more than {MAX_WAITING} template values wait for the SQL after them (one per skipped block)"
            ));
        }
        merged.pending_close_call &= other.pending_close_call;
        merged.started |= other.started;
        merged.ends_in_word |= other.ends_in_word;
    }
    Ok(merged)
}

/// Adds to `into` the items of `from` it lacks. Along a path that skips many blocks these
/// lists hold an item per block while the other branch holds a few: the few are looked up.
fn union<T: Eq + std::hash::Hash + Copy>(into: &mut Vec<T>, mut from: Vec<T>) {
    if from.is_empty() || *into == from {
        return;
    }
    if into.len() < from.len() {
        std::mem::swap(into, &mut from);
    }
    if from.len() <= 8 {
        for item in from {
            if !into.contains(&item) {
                into.push(item);
            }
        }
    } else {
        let mut seen: std::collections::HashSet<T> = into.iter().copied().collect();
        into.extend(from.into_iter().filter(|item| seen.insert(*item)));
    }
}

fn merge_frame(frame: &mut Frame, theirs: Frame, builder: &mut Builder) -> Result<(), String> {
    let same_kind = match (&frame.kind, &theirs.kind) {
        (Kind::Expr { carry }, Kind::Expr { carry: other }) => {
            if carry != other {
                frame.kind = Kind::Expr { carry: None };
            }
            true
        }
        (mine, other) => mine == other,
    };
    if !same_kind {
        return Err("a parenthesis opens or closes inside one template branch only".to_owned());
    }
    frame.selects |= theirs.selects;
    if frame.clause != theirs.clause {
        frame.clause = merge_clause(frame, &theirs)?;
    }
    if frame.source != theirs.source {
        let expect = frame.source == SourceState::Expect || theirs.source == SourceState::Expect;
        frame.source = if expect { SourceState::Expect } else { SourceState::After };
    }
    union(&mut frame.last_sources, theirs.last_sources);
    union(&mut frame.uses, theirs.uses);
    frame.outer_join |= theirs.outer_join;
    frame.join_outer_pending |= theirs.join_outer_pending;
    frame.join_array_pending |= theirs.join_array_pending;
    if frame.with != theirs.with {
        frame.with = WithState::None;
    }
    frame.after_setop |= theirs.after_setop;
    if frame.group != theirs.group {
        frame.group = builder.merge_groups(frame.group, theirs.group);
    }
    frame.negating |= theirs.negating;
    frame.case_depth = frame.case_depth.max(theirs.case_depth);
    frame.log.merge(&theirs.log);
    frame.conjunctive &= theirs.conjunctive;
    if frame.func != theirs.func {
        frame.func.clear();
    }
    if frame.lead != theirs.lead {
        frame.lead = Lead::Elsewhere;
    }
    if frame.args != theirs.args {
        frame.args = usize::MAX;
    }
    if frame.first_arg != theirs.first_arg {
        frame.first_arg = None;
    }
    frame.after_as |= theirs.after_as;
    if frame.weak.is_none() {
        frame.weak = theirs.weak;
    }
    Ok(())
}

fn merge_clause(frame: &Frame, theirs: &Frame) -> Result<Clause, String> {
    let from_like = |clause: Clause| matches!(clause, Clause::From | Clause::Join);
    if from_like(frame.clause) && from_like(theirs.clause) {
        return Ok(Clause::Join);
    }
    let half_written = |frame: &Frame| frame.in_from() && frame.source == SourceState::Expect;
    if half_written(frame) || half_written(theirs) {
        return Err("template branches leave a FROM clause half-written".to_owned());
    }
    Ok(Clause::Mixed)
}
