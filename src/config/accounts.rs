//! `[[account]]`: several accounts in one agent, and `--shard K/N`, which keeps the accounts
//! that fall to one agent of N.
//!
//! The single-account form (`[server] discover` and `[auth]` at the top) is one unnamed account
//! whose state is `state.dir` itself; a named account's state is `state.dir/<name>`.

use super::tables::AuthConfig;
use super::{Config, ConfigError, Discover};
use std::path::PathBuf;

/// One account, resolved against the rest of the file.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountSpec {
    /// None: the single account of the top-level `[auth]`.
    pub name: Option<String>,
    pub discover: Discover,
    /// None on the embedded simulator: the simulator user [`AccountSpec::simulator_user`].
    pub auth: Option<AuthConfig>,
    /// `scripts.dir`, then the account's own `scripts_dir` (whose scripts win).
    pub scripts_dirs: Vec<PathBuf>,
    pub state_dir: PathBuf,
    /// Where its keys are in the file (`auth`, `account.<name>.auth`), for messages.
    pub key: String,
}

impl AccountSpec {
    /// The label in logs, metrics and `agent.account.name` (`default` for the unnamed one).
    pub fn label(&self) -> &str {
        self.name.as_deref().unwrap_or("default")
    }

    /// The simulator user an embedded account without `[auth]` signs in as.
    pub fn simulator_user(&self) -> String {
        match &self.name {
            None => crate::sim::DEMO_USER.to_string(),
            Some(n) if n.contains('@') => n.clone(),
            Some(n) => format!("{n}@contoso.com"),
        }
    }

    /// The account's SIP URI when the configuration names the user (a bearer token may not).
    pub fn uri(&self) -> Option<String> {
        let user = match &self.auth {
            Some(a) => a.username.clone()?,
            None => self.simulator_user(),
        };
        user.contains('@').then(|| format!("sip:{user}"))
    }
}

/// `--shard K/N`: this agent runs the accounts whose [`shard_of`] is K (0-based, as a
/// StatefulSet's pod ordinal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl std::str::FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Shard, String> {
        let bad = || format!("expected K/N with 0 <= K < N (such as 0/3), got {s:?}");
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count): (u32, u32) = (k.trim().parse().map_err(|_| bad())?, n.trim().parse().map_err(|_| bad())?);
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

/// The shard (0..count) an account name falls to, by rendezvous (highest-random-weight)
/// hashing: each shard k scores the name (`weight(name, k)`) and the highest score wins. Stable
/// across builds, platforms and the order of the file, so every agent of a fleet agrees without
/// talking to the others, and adding an account moves no other. Going from N to N+1 shards
/// moves only the accounts the new shard wins, about 1/(N+1) of them, all onto the new shard
/// (a name's scores for the old shards do not change); modulo N would have moved about N/(N+1).
pub fn shard_of(name: &str, count: u32) -> u32 {
    let h = fnv1a(name);
    (0..count.max(1)).max_by_key(|&k| (weight(h, k), std::cmp::Reverse(k))).unwrap_or(0)
}

/// FNV-1a, 64 bits, of an account name.
fn fnv1a(name: &str) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// Shard `k`'s score for the name hashed to `h`: the name's hash and the shard number mixed by
/// MurmurHash3's 64-bit finalizer (FNV-1a alone is not enough: its low bit is the parity of the
/// name's bytes, and nearby shard numbers would score alike).
fn weight(h: u64, k: u32) -> u64 {
    let mut x = h ^ (k as u64 + 1).wrapping_mul(0x9e3779b97f4a7c15);
    for _ in 0..2 {
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51afd7ed558ccd);
        x ^= x >> 33;
        x = x.wrapping_mul(0xc4ceb9fe1a85ec53);
        x ^= x >> 33;
    }
    x
}

/// What an account name may be: it names a folder and a metrics label.
fn name_ok(name: &str) -> bool {
    !name.is_empty() && name.len() <= 64 && !name.starts_with('.') && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
}

impl Config {
    /// Every account of the file (one unnamed one without `[[account]]`), in file order.
    pub fn accounts(&self) -> Result<Vec<AccountSpec>, ConfigError> {
        if self.accounts.is_empty() {
            return Ok(vec![AccountSpec {
                name: None,
                discover: self.discover()?,
                auth: self.auth.clone(),
                scripts_dirs: vec![self.scripts_dir()],
                state_dir: self.state_dir(),
                key: "auth".into(),
            }]);
        }
        self.accounts
            .iter()
            .map(|a| {
                let at = format!("account.{}", a.name);
                let discover = match &a.discover {
                    Some(d) => self.discover_of(d, &format!("{at}.discover"))?,
                    None => self.discover()?,
                };
                let mut scripts_dirs = vec![self.scripts_dir()];
                scripts_dirs.extend(a.scripts_dir.as_ref().map(|d| self.resolve(d)));
                Ok(AccountSpec {
                    name: Some(a.name.clone()),
                    discover,
                    auth: a.auth.clone(),
                    scripts_dirs,
                    state_dir: self.state_dir().join(&a.name),
                    key: format!("{at}.auth"),
                })
            })
            .collect()
    }

    /// The accounts of `shard` (all without one). A shard of a file without `[[account]]` is
    /// an error; a shard that no account falls to has none (its agent idles until a reload
    /// gives it one: a small fleet may leave a shard empty).
    pub fn accounts_of(&self, shard: Option<Shard>) -> Result<Vec<AccountSpec>, ConfigError> {
        let all = self.accounts()?;
        let Some(shard) = shard else { return Ok(all) };
        if self.accounts.is_empty() {
            return Err(self.invalid("account", "--shard splits [[account]] entries; this file has none (one unnamed account)"));
        }
        Ok(all.into_iter().filter(|a| shard_of(a.label(), shard.count) == shard.index).collect())
    }

    /// The users the embedded simulator accepts (password `demo`): `[simulator] users`, or
    /// the demo user and every embedded account's user.
    pub fn simulator_users(&self) -> Vec<String> {
        if !self.simulator.users.is_empty() {
            return self.simulator.users.clone();
        }
        let mut users = vec![crate::sim::DEMO_USER.to_string()];
        for a in self.accounts().unwrap_or_default() {
            if a.discover == Discover::Embedded && a.auth.is_none() && !users.contains(&a.simulator_user()) {
                users.push(a.simulator_user());
            }
        }
        users
    }

    pub(super) fn check_accounts(&self) -> Result<(), ConfigError> {
        if self.auth.is_some() {
            return Err(self.invalid("auth", "with [[account]] entries, each account has its own [account.auth]; move [auth] into one"));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, a) in self.accounts.iter().enumerate() {
            if !name_ok(&a.name) {
                return Err(self.invalid(
                    format!("account[{}].name", i + 1),
                    format!("expected 1 to 64 letters, digits, '-', '_', '.' or '@' (it names a folder), got {:?}", a.name),
                ));
            }
            if !seen.insert(a.name.to_ascii_lowercase()) {
                return Err(self.invalid(format!("account[{}].name", i + 1), format!("{:?} is used by an earlier account", a.name)));
            }
        }
        let explicit_users = !self.simulator.users.is_empty();
        // Two accounts signing in as one user would share one application (same endpoint id)
        // and take each other's event channel.
        let mut users: std::collections::BTreeMap<(String, String), String> = std::collections::BTreeMap::new();
        for spec in self.accounts()? {
            let user = match &spec.auth {
                Some(a) => a.username.clone(),
                None => Some(spec.simulator_user()),
            };
            if let Some(user) = user {
                if let Some(other) = users.insert((pool_identity(&spec.discover), user_identity(&user)), spec.label().to_string()) {
                    let key = if spec.auth.is_some() { format!("{}.username", spec.key) } else { format!("account.{}.name", spec.label()) };
                    return Err(self.invalid(
                        key,
                        format!("signs in as {user}, as the account {other:?} does: two accounts of one user would take each other's event channel"),
                    ));
                }
            }
        }
        for spec in self.accounts()? {
            match &spec.auth {
                Some(auth) => self.check_auth(auth, &spec.key)?,
                None if spec.discover != Discover::Embedded => {
                    return Err(self.invalid(spec.key.clone(), "an [account.auth] table is required when the account's discover is a pool URL"));
                }
                None if explicit_users && !self.simulator.users.contains(&spec.simulator_user()) => {
                    return Err(self.invalid(
                        spec.key.clone(),
                        format!(
                            "no [account.auth], so it signs in to the embedded simulator as {}, which `simulator.users` does not list",
                            spec.simulator_user()
                        ),
                    ));
                }
                None => {}
            }
            if let Some(dir) = spec.scripts_dirs.get(1) {
                if dir == &spec.scripts_dirs[0] {
                    return Err(self.invalid(format!("account.{}.scripts_dir", spec.label()), "is scripts.dir itself; leave it out"));
                }
            }
        }
        for (i, u) in self.simulator.users.iter().enumerate() {
            if !u.contains('@') || u.trim() != u {
                return Err(self.invalid("simulator.users", format!("entry {} ({u:?}): expected a user name such as \"reception@contoso.com\"", i + 1)));
            }
        }
        Ok(())
    }
}

/// A pool as the accounts that sign in to it see it: scheme, host (every loopback name and
/// address is one host: `localhost`, `127.0.0.1` and `[::1]` reach the same server) and port.
/// Hosts are not resolved here (a configuration check must not wait for DNS): two names of
/// one pool are told apart, and the pool itself then refuses the second P-GET (PGetReplaced).
fn pool_identity(discover: &Discover) -> String {
    match discover {
        Discover::Embedded => "embedded".into(),
        Discover::Url(u) => {
            let host = match u.host() {
                Some(url::Host::Domain(d)) if d.eq_ignore_ascii_case("localhost") || d.to_ascii_lowercase().ends_with(".localhost") => "loopback".to_string(),
                Some(url::Host::Ipv4(ip)) if ip.is_loopback() => "loopback".to_string(),
                Some(url::Host::Ipv6(ip)) if ip.is_loopback() => "loopback".to_string(),
                Some(h) => h.to_string().to_ascii_lowercase(),
                None => String::new(),
            };
            format!("{}://{host}:{}", u.scheme(), u.port_or_known_default().unwrap_or(0))
        }
    }
}

/// A user as a pool compares them: without `sip:`, in any case.
fn user_identity(user: &str) -> String {
    let u = user.trim();
    let u = if u.len() > 4 && u[..4].eq_ignore_ascii_case("sip:") { &u[4..] } else { u };
    u.to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn one_user_one_account_compares_what_the_pool_sees() {
        let account = |name: &str, discover: &str, user: &str| {
            format!(
                "[[account]]\nname = \"{name}\"\ndiscover = \"{discover}\"\n[account.auth]\nkind = \"password\"\nusername = \"{user}\"\npassword_env = \"P\"\n"
            )
        };
        for (a, b) in [
            (("http://127.0.0.1:8480/", "alice@contoso.com"), ("http://localhost:8480/", "Alice@Contoso.com")),
            (("https://Pool.Contoso.com/", "alice@contoso.com"), ("https://pool.contoso.com:443/x", "sip:alice@contoso.com")),
            (("http://[::1]:8480/", "alice@contoso.com"), ("http://127.0.0.2:8480/", "ALICE@contoso.com")),
        ] {
            let text = account("a", a.0, a.1) + &account("b", b.0, b.1);
            let e = parse(&text).unwrap_err().to_string();
            assert!(e.contains("account.b.auth.username") && e.contains("as the account \"a\" does"), "{text}: {e}");
        }
        let other_port = account("a", "http://127.0.0.1:8480/", "alice@contoso.com") + &account("b", "http://127.0.0.1:8481/", "alice@contoso.com");
        assert!(parse(&other_port).is_ok(), "two pools");
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/ucwa/config.toml"))
    }

    #[test]
    fn the_single_form_is_one_unnamed_account_in_state_dir() {
        let c = parse("").unwrap();
        let a = c.accounts().unwrap();
        assert_eq!(a.len(), 1);
        assert_eq!((a[0].name.as_deref(), a[0].label(), a[0].state_dir.as_path()), (None, "default", Path::new("/etc/ucwa/state")));
        assert_eq!(a[0].uri().as_deref(), Some("sip:demo@contoso.com"));
    }

    #[test]
    fn accounts_get_their_own_state_scripts_and_simulator_users() {
        let c = parse(
            "[[account]]\nname = \"reception\"\nscripts_dir = \"scripts-reception\"\n\
             [[account]]\nname = \"helpdesk\"\n[account.auth]\nkind = \"password\"\nusername = \"help@contoso.com\"\npassword_env = \"P\"\n",
        )
        .unwrap();
        let a = c.accounts().unwrap();
        assert_eq!(a[0].state_dir, Path::new("/etc/ucwa/state/reception"));
        assert_eq!(a[0].scripts_dirs, [Path::new("/etc/ucwa/scripts"), Path::new("/etc/ucwa/scripts-reception")]);
        assert_eq!(a[0].uri().as_deref(), Some("sip:reception@contoso.com"));
        assert_eq!(a[1].uri().as_deref(), Some("sip:help@contoso.com"));
        assert_eq!(a[1].key, "account.helpdesk.auth");
        assert_eq!(c.simulator_users(), ["demo@contoso.com", "reception@contoso.com"]);
    }

    #[test]
    fn bad_accounts_name_the_key() {
        for (text, key) in [
            ("[[account]]\nname = \"a/b\"\n", "`account[1].name`"),
            ("[[account]]\nname = \"a\"\n[[account]]\nname = \"A\"\n", "`account[2].name`"),
            ("[auth]\nkind = \"password\"\nusername = \"u@x\"\npassword_env = \"P\"\n[[account]]\nname = \"a\"\n", "`auth`"),
            ("[[account]]\nname = \"a\"\ndiscover = \"https://pool.contoso.com/\"\n", "`account.a.auth`"),
            ("[[account]]\nname = \"a\"\n[account.auth]\nkind = \"password\"\nusername = \"u@x\"\n", "`account.a.auth.password_env`"),
            ("[[account]]\nname = \"a\"\ndiscover = \"http://pool.contoso.com/\"\n", "`account.a.discover`"),
            ("[simulator]\nusers = [\"x@contoso.com\"]\n[[account]]\nname = \"a\"\n", "`account.a.auth`"),
            ("[[account]]\nname = \"a\"\nscripts_dir = \"scripts\"\n", "`account.a.scripts_dir`"),
            ("[[account]]\nname = \"alice\"\n[[account]]\nname = \"alice@contoso.com\"\n", "`account.alice@contoso.com.name`"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
    }

    #[test]
    fn shards_split_the_accounts_stably_and_completely() {
        assert_eq!("1/3".parse::<Shard>(), Ok(Shard { index: 1, count: 3 }));
        for bad in ["3/3", "1", "a/2", "0/0", "-1/2"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
        // Pinned: a fleet's agents must agree across versions.
        assert_eq!([shard_of("reception", 4), shard_of("helpdesk", 4), shard_of("rg-1", 4)], PINNED);
        // Names that differ little still spread (FNV-1a's low bit alone would put these in one).
        let pairs = ["a1", "b2", "c3", "d4", "e5", "f6", "g7", "h8"];
        let zeros = pairs.iter().filter(|n| shard_of(n, 2) == 0).count();
        assert!((2..=6).contains(&zeros), "{zeros} of 8 in shard 0");
        let names: Vec<String> = (0..60).map(|i| format!("acct-{i}")).collect();
        let text: String = names.iter().map(|n| format!("[[account]]\nname = \"{n}\"\n")).collect();
        let c = parse(&text).unwrap();
        let mut union = Vec::new();
        for k in 0..3 {
            let mine = c.accounts_of(Some(Shard { index: k, count: 3 })).unwrap();
            assert!(mine.len() >= 10, "a shard of 60 accounts gets a fair part: {}", mine.len());
            union.extend(mine.into_iter().map(|a| a.name.unwrap()));
        }
        union.sort();
        let mut want = names.clone();
        want.sort();
        assert_eq!(union, want, "every account in exactly one shard");
        let e = parse("").unwrap().accounts_of(Some(Shard { index: 0, count: 2 })).unwrap_err().to_string();
        assert!(e.contains("--shard"), "{e}");
    }

    const PINNED: [u32; 3] = [3, 2, 3];

    #[test]
    fn going_from_n_to_n_plus_one_shards_moves_about_one_in_n_plus_one_all_to_the_new_shard() {
        let names: Vec<String> = (0..3000).map(|i| format!("user{i}@contoso.com")).collect();
        for n in 1..=5u32 {
            let moved: Vec<&String> = names.iter().filter(|a| shard_of(a, n) != shard_of(a, n + 1)).collect();
            // 2 -> 3 moves about a third: 1,000 of 3,000 expected, ±10 %.
            let expected = names.len() as f64 / (n + 1) as f64;
            assert!((moved.len() as f64 - expected).abs() < expected * 0.1, "{n} -> {}: {} moved, about {expected:.0} expected", n + 1, moved.len());
            // Nothing moves between the old shards: a moved account goes to the new one.
            assert!(moved.iter().all(|a| shard_of(a, n + 1) == n), "{n} -> {}: an account moved between old shards", n + 1);
        }
        // And every shard of 3 gets its fair part of 3,000.
        for k in 0..3 {
            let mine = names.iter().filter(|a| shard_of(a, 3) == k).count();
            assert!((900..=1100).contains(&mine), "shard {k}/3 has {mine}");
        }
    }
}
