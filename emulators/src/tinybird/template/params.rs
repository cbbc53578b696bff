//! The parameters a template reads, as Tinybird lists them in a node's `params` (its
//! `get_var_data`): a typed function's first argument gets that type, its default and its
//! keyword arguments (`required`, `description`...); a name only tested with `defined()`,
//! `column()` or `columns()` is a `String` "used in a function call"; any other bare name is a
//! `String` without default.

use serde_json::{Map, Value as Json};

use super::blocks::Block;
use super::expr::Expr;
use super::scalar::Scalar;
use super::value::Value;

/// One parameter of a node.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ParamInfo {
    pub(crate) name: String,
    pub(crate) param_type: String,
    pub(crate) default: Json,
    /// Only passed to `defined()`, `column()` or `columns()` (Tinybird's `used_in`).
    pub(crate) only_tested: bool,
    /// Other keyword arguments of the typed function, e.g. `required`.
    pub(crate) options: Vec<(String, Json)>,
}

impl ParamInfo {
    fn new(name: &str, param_type: String, default: Json) -> Self {
        Self { name: name.to_owned(), param_type, default, only_tested: false, options: Vec::new() }
    }

    /// The entry of a node's `params` in a pipe description.
    pub(crate) fn to_json(&self) -> Json {
        let mut entry = Map::new();
        entry.insert("name".to_owned(), Json::String(self.name.clone()));
        entry.insert("type".to_owned(), Json::String(self.param_type.clone()));
        entry.insert("default".to_owned(), self.default.clone());
        for (name, value) in &self.options {
            entry.insert(name.clone(), value.clone());
        }
        if self.only_tested {
            entry.insert("used_in".to_owned(), Json::String("function_call".to_owned()));
        }
        Json::Object(entry)
    }
}

/// Tinybird's `parameter_types`: the functions whose first argument is a typed parameter.
fn is_parameter_type(function: &str) -> bool {
    function == "Boolean" || function == "JSON" || Scalar::named(function).is_some()
}

/// The parameters of `blocks`, in the order they first appear.
pub(super) fn collect(blocks: &[Block]) -> Vec<ParamInfo> {
    let mut params = Vec::new();
    let mut assigned = Vec::new();
    visit_blocks(blocks, &mut params, &mut assigned);
    params.retain(|param: &ParamInfo| !assigned.contains(&param.name));
    params
}

fn visit_blocks(blocks: &[Block], params: &mut Vec<ParamInfo>, assigned: &mut Vec<String>) {
    for block in blocks {
        match block {
            Block::Text(_) => {}
            Block::Output { expr, .. } => visit(expr, false, params),
            Block::If { branches, otherwise } => {
                for branch in branches {
                    visit(&branch.condition, false, params);
                    visit_blocks(&branch.body, params, assigned);
                }
                if let Some(body) = otherwise {
                    visit_blocks(body, params, assigned);
                }
            }
            Block::Set { name, expr, .. } => {
                visit(expr, false, params);
                assigned.push(name.clone());
            }
        }
    }
}

/// Records `param`, replacing an earlier entry of the same name in place.
fn record(params: &mut Vec<ParamInfo>, param: ParamInfo) {
    match params.iter_mut().find(|existing| existing.name == param.name) {
        Some(existing) => *existing = param,
        None => params.push(param),
    }
}

fn visit(expr: &Expr, parent_is_call: bool, params: &mut Vec<ParamInfo>) {
    match expr {
        Expr::Name(name) if !parent_is_call => {
            record(params, ParamInfo::new(name, "String".to_owned(), Json::Null));
        }
        Expr::Literal(_) | Expr::Name(_) => {}
        Expr::Call { function, args, kwargs } => {
            visit_call(function, args, kwargs, params);
            for arg in args.iter().chain(kwargs.iter().map(|(_, arg)| arg)) {
                visit(arg, true, params);
            }
        }
        Expr::List(items) => items.iter().for_each(|item| visit(item, false, params)),
        Expr::Not(operand) | Expr::Negate(operand) => visit(operand, false, params),
        Expr::And(left, right)
        | Expr::Or(left, right)
        | Expr::Compare(left, _, right)
        | Expr::Add(left, right)
        | Expr::Subtract(left, right) => {
            visit(left, false, params);
            visit(right, false, params);
        }
    }
}

fn visit_call(function: &str, args: &[Expr], kwargs: &[(String, Expr)], params: &mut Vec<ParamInfo>) {
    let Some(Expr::Name(name)) = args.first() else { return };
    if matches!(function, "defined" | "column" | "columns") {
        if params.iter().all(|param| &param.name != name) {
            let mut param = ParamInfo::new(name, "String".to_owned(), Json::Null);
            param.only_tested = true;
            params.push(param);
        }
        return;
    }
    let (param_type, default_position) = if function == "Array" {
        let item_type = match args.get(1).map(literal) {
            None => "String".to_owned(),
            Some(Json::String(item_type)) => item_type,
            Some(other) => other.to_string(),
        };
        (format!("Array({item_type})"), 2)
    } else if is_parameter_type(function) {
        (function.to_owned(), 1)
    } else {
        return;
    };
    let default = kwargs
        .iter()
        .find(|(keyword, _)| keyword == "default")
        .map(|(_, value)| literal(value))
        .or_else(|| args.get(default_position).map(literal))
        .unwrap_or(Json::Null);
    let mut param = ParamInfo::new(name, param_type, default);
    param.options = kwargs
        .iter()
        .filter(|(keyword, _)| keyword != "default")
        .map(|(keyword, value)| (keyword.clone(), literal(value)))
        .collect();
    record(params, param);
}

/// A literal argument's value (Tinybird's `node_to_value`): a name gives its own text, anything
/// computed gives null.
fn literal(expr: &Expr) -> Json {
    match expr {
        Expr::Literal(value) => value.to_json(),
        Expr::Name(name) => Json::String(name.clone()),
        Expr::List(items) => Json::Array(items.iter().map(literal).collect()),
        _ => Value::None.to_json(),
    }
}
