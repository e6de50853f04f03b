//! Reading a Dockerfile: its instructions (continuations joined, comments
//! dropped) grouped into stages, and `.dockerignore` patterns.

/// One `FROM` and the instructions after it.
#[derive(Debug)]
pub struct Stage {
    pub name: Option<String>,
    pub image: String,
    pub lines: Vec<String>,
}

/// Instructions with continuations joined and comments dropped.
pub fn instructions(text: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut continued = String::new();
    for raw in text.lines() {
        let stripped = raw.trim();
        if continued.is_empty() && (stripped.is_empty() || stripped.starts_with('#')) {
            continue;
        }
        if !continued.is_empty() && stripped.starts_with('#') {
            continue; // a comment inside a continued instruction
        }
        if let Some(head) = stripped.strip_suffix('\\') {
            continued.push_str(head);
            continued.push(' ');
            continue;
        }
        lines.push(format!("{continued}{stripped}"));
        continued.clear();
    }
    if !continued.is_empty() {
        lines.push(continued);
    }
    lines
}

/// The stages, in order.
pub fn stages(text: &str) -> Vec<Stage> {
    let mut stages: Vec<Stage> = Vec::new();
    for line in instructions(text) {
        let mut words = line.split_whitespace();
        let instruction = words.next().unwrap_or_default().to_ascii_uppercase();
        if instruction == "FROM" {
            let args: Vec<&str> = words.filter(|w| !w.starts_with("--")).collect();
            let name = match args.as_slice() {
                [_, as_, name, ..] if as_.eq_ignore_ascii_case("as") => Some((*name).to_owned()),
                _ => None,
            };
            stages.push(Stage { name, image: args.first().copied().unwrap_or_default().to_owned(), lines: Vec::new() });
        } else if let Some(stage) = stages.last_mut() {
            stage.lines.push(line);
        }
    }
    stages
}

/// `.dockerignore` patterns that exclude (negations and comments dropped).
pub fn ignore_patterns(text: &str) -> Vec<String> {
    text.lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with('#') && !line.starts_with('!'))
        .map(|line| line.trim().trim_end_matches('/').to_owned())
        .collect()
}

/// Shell-style matching as Python's `fnmatch`: `*` matches any run (slashes
/// too), `?` one character; everything else itself.
pub fn matches(pattern: &str, name: &str) -> bool {
    fn go(pattern: &[char], name: &[char]) -> bool {
        match pattern.split_first() {
            None => name.is_empty(),
            Some(('*', rest)) => (0..=name.len()).any(|skip| go(rest, &name[skip..])),
            Some(('?', rest)) => !name.is_empty() && go(rest, &name[1..]),
            Some((c, rest)) => name.first() == Some(c) && go(rest, &name[1..]),
        }
    }
    go(&pattern.chars().collect::<Vec<_>>(), &name.chars().collect::<Vec<_>>())
}

/// A relative path with `.`, empty parts and `..` resolved (`.` when nothing is left).
pub fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    if parts.is_empty() { ".".to_owned() } else { parts.join("/") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continued_instructions_are_joined_and_comments_dropped() {
        let text = "FROM a AS b\n# note\nRUN x \\\n  # inside\n  && y\nFROM c\nUSER 1\n";
        let stages = stages(text);
        assert_eq!(stages.len(), 2);
        assert_eq!(stages[0].name.as_deref(), Some("b"));
        assert_eq!(stages[0].lines[0].split_whitespace().collect::<Vec<_>>(), ["RUN", "x", "&&", "y"]);
        assert_eq!(stages[1].lines, ["USER 1"]);
    }

    #[test]
    fn patterns_match_as_fnmatch_does() {
        assert!(matches("**/*.db", "data/x.db"));
        assert!(matches("deploy", "deploy"));
        assert!(!matches("deploy", "deploy2"));
        assert_eq!(normalize("./proto/"), "proto");
        assert_eq!(normalize("./"), ".");
    }
}
