//! Reading an HAProxy configuration as far as the deploy check needs (the
//! load balancer of deploy/docker-compose.cluster.yml; no haproxy binary is
//! installed to ask): its sections and their lines, comments dropped.

/// Keywords that start a section.
const SECTIONS: [&str; 13] = [
    "global",
    "defaults",
    "frontend",
    "backend",
    "listen",
    "resolvers",
    "peers",
    "userlist",
    "mailers",
    "program",
    "http-errors",
    "ring",
    "cache",
];

/// One section: `backend gateways` and the lines under it, each as words.
#[derive(Debug)]
pub struct Section {
    pub kind: String,
    pub name: String,
    pub lines: Vec<Vec<String>>,
}

impl Section {
    /// The rest of each line that starts with `words`.
    pub fn lines_starting<'a>(&'a self, words: &'a [&'a str]) -> impl Iterator<Item = &'a [String]> {
        self.lines
            .iter()
            .filter(move |line| line.iter().map(String::as_str).take(words.len()).eq(words.iter().copied()))
            .map(move |line| &line[words.len()..])
    }

    /// Whether a line starts with `words`.
    pub fn has(&self, words: &[&str]) -> bool {
        self.lines_starting(words).next().is_some()
    }
}

/// The sections of a configuration, in order.
#[derive(Debug)]
pub struct Config {
    pub sections: Vec<Section>,
}

impl Config {
    pub fn parse(text: &str) -> Self {
        Self { sections: sections(text) }
    }

    /// The sections of one kind.
    pub fn of_kind<'a>(&'a self, kinds: &'a [&'a str]) -> impl Iterator<Item = &'a Section> {
        self.sections.iter().filter(move |s| kinds.contains(&s.kind.as_str()))
    }

    /// The rest of the last line of `section` that starts with `words`, or
    /// else of the defaults (which proxy sections inherit).
    pub fn setting<'a>(&'a self, section: &'a Section, words: &'a [&'a str]) -> Option<&'a [String]> {
        std::iter::once(section).chain(self.of_kind(&["defaults"])).find_map(|s| s.lines_starting(words).last())
    }
}

/// The sections, in order.
fn sections(text: &str) -> Vec<Section> {
    let mut sections: Vec<Section> = Vec::new();
    for raw in text.lines() {
        let line = raw.split('#').next().unwrap_or_default();
        let words: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        let Some(first) = words.first() else { continue };
        if SECTIONS.contains(&first.as_str()) {
            let name = words.get(1).cloned().unwrap_or_default();
            sections.push(Section { kind: first.clone(), name, lines: Vec::new() });
        } else if let Some(section) = sections.last_mut() {
            section.lines.push(words);
        }
    }
    sections
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_belong_to_the_section_above_them() {
        let sections =
            sections("global\n  log stdout # where\n\nbackend b\n  server s1 h:1 check\n  option httpchk GET /r\n");
        assert_eq!(sections.len(), 2);
        assert_eq!(sections[0].lines, [["log", "stdout"]]);
        assert_eq!((sections[1].kind.as_str(), sections[1].name.as_str()), ("backend", "b"));
        let servers: Vec<&[String]> = sections[1].lines_starting(&["server"]).collect();
        assert_eq!(servers, [["s1", "h:1", "check"]]);
        assert!(sections[1].has(&["option", "httpchk"]));
    }
}
