//! A reader for the subset of Gherkin the conformance feature files use:
//! `Feature:`, `Background:`, `Scenario:`, `Scenario Outline:` with
//! `Examples:` tables (expanded into one scenario per row), steps
//! (`Given`/`When`/`Then`/`And`/`But`) with a doc string (`"""`) or a
//! table; tags, comments and free description lines are skipped.
//!
//! Test harness only (pure; no I/O): the product never reads Gherkin.

/// One step, with its keyword dropped (`And` means the same as the step
/// before it to the suite's runner, which matches on the text alone).
#[derive(Clone, Debug)]
pub struct Step {
    pub text: String,
    /// The `"""` block, without its indentation.
    pub doc: Option<String>,
    /// The table rows, each a list of trimmed cells (header row included).
    pub table: Vec<Vec<String>>,
    /// 1-based line in the feature file.
    pub line: usize,
}

#[derive(Clone, Debug)]
pub struct Scenario {
    /// The scenario's title; an outline's rows add ` [row N: a, b]`.
    pub name: String,
    pub steps: Vec<Step>,
    /// For an outline's row: the Examples values by column name.
    pub example: Vec<(String, String)>,
}

#[derive(Clone, Debug, Default)]
pub struct Feature {
    pub name: String,
    pub background: Vec<Step>,
    pub scenarios: Vec<Scenario>,
}

const STEP_KEYWORDS: [&str; 5] = ["Given ", "When ", "Then ", "And ", "But "];

/// Where the lines being read go.
enum Section {
    Description,
    Background,
    Scenario { outline: bool },
    Examples,
}

/// An outline or scenario while it is read.
struct Pending {
    name: String,
    steps: Vec<Step>,
    outline: bool,
    examples: Vec<Vec<String>>,
}

impl Pending {
    /// A plain scenario as it is; an outline once per Examples row (an
    /// outline without Examples once, with its placeholders as written).
    fn finish(self, out: &mut Vec<Scenario>) {
        if !self.outline || self.examples.len() < 2 {
            out.push(Scenario {
                name: self.name,
                steps: self.steps,
                example: Vec::new(),
            });
            return;
        }
        let header = &self.examples[0];
        for (i, row) in self.examples[1..].iter().enumerate() {
            let example: Vec<(String, String)> =
                header.iter().cloned().zip(row.iter().cloned()).collect();
            let fill = |s: &str| {
                example
                    .iter()
                    .fold(s.to_string(), |s, (k, v)| s.replace(&format!("<{k}>"), v))
            };
            out.push(Scenario {
                name: format!("{} [row {}: {}]", self.name, i + 1, row.join(", ")),
                steps: self
                    .steps
                    .iter()
                    .map(|s| Step {
                        text: fill(&s.text),
                        doc: s.doc.as_deref().map(fill),
                        table: s
                            .table
                            .iter()
                            .map(|r| r.iter().map(|c| fill(c)).collect())
                            .collect(),
                        line: s.line,
                    })
                    .collect(),
                example,
            });
        }
    }
}

/// A table row's cells: `| a | b |` → ["a", "b"].
pub fn cells(line: &str) -> Vec<String> {
    let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
    inner.split('|').map(|c| c.trim().to_string()).collect()
}

/// Reads a feature file; an error names the line.
pub fn parse(text: &str) -> Result<Feature, String> {
    let mut feature = Feature::default();
    let mut section = Section::Description;
    let mut pending: Option<Pending> = None;
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let raw = lines[i];
        let line = raw.trim();
        let n = i + 1;
        i += 1;
        if line.is_empty() || line.starts_with('#') || line.starts_with('@') {
            continue;
        }
        if let Some(name) = line.strip_prefix("Feature:") {
            feature.name = name.trim().to_string();
            section = Section::Description;
        } else if line.starts_with("Background:") {
            section = Section::Background;
        } else if let Some((name, outline)) = line
            .strip_prefix("Scenario Outline:")
            .map(|n| (n, true))
            .or_else(|| line.strip_prefix("Scenario:").map(|n| (n, false)))
        {
            if let Some(p) = pending.take() {
                p.finish(&mut feature.scenarios);
            }
            pending = Some(Pending {
                name: name.trim().to_string(),
                steps: Vec::new(),
                outline,
                examples: Vec::new(),
            });
            section = Section::Scenario { outline };
        } else if line.starts_with("Examples:") {
            match &section {
                Section::Scenario { outline: true } => section = Section::Examples,
                _ => return Err(format!("line {n}: Examples outside a Scenario Outline")),
            }
        } else if line.starts_with("\"\"\"") {
            let indent = raw.len() - raw.trim_start().len();
            let mut doc = Vec::new();
            loop {
                let Some(l) = lines.get(i) else {
                    return Err(format!("line {n}: doc string not closed"));
                };
                i += 1;
                if l.trim() == "\"\"\"" {
                    break;
                }
                doc.push(l.get(indent..).unwrap_or(l.trim_start()));
            }
            last_step(&section, &mut feature, &mut pending, n)?.doc = Some(doc.join("\n"));
        } else if line.starts_with('|') {
            if let Section::Examples = section {
                if let Some(p) = pending.as_mut() {
                    p.examples.push(cells(line));
                }
            } else {
                last_step(&section, &mut feature, &mut pending, n)?
                    .table
                    .push(cells(line));
            }
        } else if let Some(k) = STEP_KEYWORDS.iter().find(|k| line.starts_with(**k)) {
            let step = Step {
                text: line[k.len()..].trim().to_string(),
                doc: None,
                table: Vec::new(),
                line: n,
            };
            match &section {
                Section::Background => feature.background.push(step),
                Section::Scenario { .. } => {
                    if let Some(p) = pending.as_mut() {
                        p.steps.push(step);
                    }
                }
                Section::Description => {} // a description line that starts like a step
                Section::Examples => {
                    return Err(format!("line {n}: a step inside Examples: {line}"));
                }
            }
        }
        // Anything else is description text (of the feature or a scenario).
    }
    if let Some(p) = pending.take() {
        p.finish(&mut feature.scenarios);
    }
    if feature.name.is_empty() {
        return Err("no Feature: line".into());
    }
    Ok(feature)
}

fn last_step<'a>(
    section: &Section,
    feature: &'a mut Feature,
    pending: &'a mut Option<Pending>,
    n: usize,
) -> Result<&'a mut Step, String> {
    let step = match section {
        Section::Background => feature.background.last_mut(),
        Section::Scenario { .. } => pending.as_mut().and_then(|p| p.steps.last_mut()),
        _ => None,
    };
    step.ok_or_else(|| format!("line {n}: a doc string or table without a step"))
}

/// The `"quoted"` arguments of a step's text, in order.
pub fn quoted(text: &str) -> Vec<String> {
    text.split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}
