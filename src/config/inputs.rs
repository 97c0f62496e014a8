//! What `cachegate check` says about the request inputs that reach the
//! backend and how each is kept from changing a shared answer.

use super::Config;

impl Config {
    /// One line per input setting, as `cachegate check` prints them.
    pub fn inputs_summary(&self) -> String {
        let mut out = String::new();
        let authority = self.backend.url.authority().map_or("", |a| a.as_str());
        if self.backend.preserve_host {
            out.push_str("backend Host: the client's (preserve_host), part of every key\n");
        } else {
            out.push_str(&format!(
                "backend Host: {authority} (the client's in X-Forwarded-Host: {})\n",
                if self.backend.forwarded_headers { "on" } else { "off" }
            ));
        }
        out
    }
}
