//! A live submit spends money, so it asks first: the person at the terminal sees the estimate and
//! the budget left and answers; a script says yes up front with `--yes`. Without a terminal to ask
//! on and without `--yes`, nothing is submitted — a script that forgot the flag must not pay
//! silently, and must not hang waiting for an answer nobody can give.

use std::io::IsTerminal as _;

/// Where the question can be asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asker {
    /// Standard input is a terminal, and so is the stream the prompt is drawn on.
    Terminal(Screen),
    /// No terminal to ask on (a pipe, a file, `/dev/null`, CI): never ask.
    NoTerminal,
    /// Tests: the answer a person would give (`None`: they quit with Esc or `q`).
    #[cfg(test)]
    Scripted(Option<bool>),
}

/// The terminal stream the prompt is drawn on: stderr, or stdout when only stderr is redirected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Screen {
    Stderr,
    Stdout,
}

impl Asker {
    /// From this process's standard streams: answers are read from stdin, so it must be a terminal.
    pub fn detect() -> Self {
        if !std::io::stdin().is_terminal() {
            return Self::NoTerminal;
        }
        if std::io::stderr().is_terminal() {
            Self::Terminal(Screen::Stderr)
        } else if std::io::stdout().is_terminal() {
            Self::Terminal(Screen::Stdout)
        } else {
            Self::NoTerminal
        }
    }

    pub fn can_ask(self) -> bool {
        self != Self::NoTerminal
    }

    /// Asks `question` (default: no; Enter alone, Esc or `q` say no). `Ok(false)` for any answer but
    /// yes. Ctrl-C ends the process, as it would anywhere else.
    pub async fn confirm(self, question: String) -> anyhow::Result<bool> {
        let screen = match self {
            Self::Terminal(screen) => screen,
            Self::NoTerminal => return Ok(false),
            #[cfg(test)]
            Self::Scripted(answer) => return Ok(answer == Some(true)),
        };
        // dialoguer reads keys in blocking calls: keep them off the runtime's threads.
        let answer = tokio::task::spawn_blocking(move || {
            let term = match screen {
                Screen::Stderr => dialoguer::console::Term::stderr(),
                Screen::Stdout => dialoguer::console::Term::stdout(),
            };
            dialoguer::Confirm::new().with_prompt(question).default(false).wait_for_newline(true).interact_on_opt(&term)
        })
        .await??;
        Ok(answer == Some(true))
    }
}
