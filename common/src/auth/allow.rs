//! Who may call: exact email addresses and whole `@domain`s, compared case-insensitively.

use std::collections::HashSet;

/// `ASSETGEN_ALLOWED` as a set: `lead@studio.com` admits that address, `@studio.com` every
/// address whose domain is exactly `studio.com` (not its subdomains). An empty list admits nobody.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    emails: HashSet<String>,
    domains: HashSet<String>,
}

impl AllowList {
    /// Entries are trimmed and lower-cased; blank ones are skipped, and so is an entry that is
    /// neither an address nor an `@domain` (a bare `studio.com` is ambiguous: write `@studio.com`).
    pub fn new<I, S>(entries: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut list = Self::default();
        for entry in entries {
            let entry = entry.as_ref().trim().to_ascii_lowercase();
            if entry.is_empty() {
                continue;
            }
            match entry.strip_prefix('@') {
                Some(domain) if !domain.is_empty() && !domain.contains('@') => {
                    list.domains.insert(domain.to_owned());
                }
                None if entry
                    .rsplit_once('@')
                    .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty()) =>
                {
                    list.emails.insert(entry);
                }
                _ => tracing::warn!(entry = %entry, "allow-list entry ignored: use an email address or @domain"),
            }
        }
        list
    }

    pub fn is_empty(&self) -> bool {
        self.emails.is_empty() && self.domains.is_empty()
    }

    pub fn allows(&self, email: &str) -> bool {
        let email = email.trim().to_ascii_lowercase();
        let Some((local, domain)) = email.rsplit_once('@') else { return false };
        if local.is_empty() || domain.is_empty() {
            return false;
        }
        self.emails.contains(&email) || self.domains.contains(domain)
    }
}

#[cfg(test)]
mod tests {
    use super::AllowList;

    #[test]
    fn emails_and_domains_match_exactly_and_ignore_case() {
        let list = AllowList::new([" Lead@Studio.com ", "@Corp.Example", "", "bare.example", "@", "x@"]);
        assert!(list.allows("lead@studio.com"));
        assert!(list.allows("LEAD@STUDIO.COM"));
        assert!(list.allows("anyone@corp.example"));
        assert!(!list.allows("other@studio.com"));
        assert!(!list.allows("anyone@sub.corp.example"));
        assert!(!list.allows("anyone@evilcorp.example"));
        assert!(!list.allows("someone@bare.example"));
        assert!(!list.allows("corp.example"));
        assert!(!list.allows("@corp.example"));
        assert!(AllowList::new(Vec::<String>::new()).is_empty());
        assert!(!AllowList::new(Vec::<String>::new()).allows("lead@studio.com"));
    }
}
