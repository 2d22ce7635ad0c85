//! Framing: a client writes parts of the lines logged about it (its SASL
//! user name, HELO name, envelope sender and recipients, ...); a filter that
//! reads an address out of such a part bans whoever the client named. This
//! module holds the stock mail filters fail2ban ships, which the agent can
//! run unchanged and which the framing tests and the fuzz targets cover.

/// fail2ban's filters (filter.d) that read mail-server logs, with each mode
/// they have: `NAME` or `NAME[mode=MODE]`.
pub const STOCK_MAIL_FILTERS: &[&str] = &[
    "postfix",
    "postfix[mode=auth]",
    "postfix[mode=normal]",
    "postfix[mode=rbl]",
    "postfix[mode=ddos]",
    "postfix[mode=extra]",
    "postfix[mode=aggressive]",
    "postfix[mode=errors]",
    "dovecot",
    "dovecot[mode=aggressive]",
    "kerio",
    "courier-auth",
    "courier-smtp",
    "cyrus-imap",
    "domino-smtp",
    "exim",
    "exim[mode=aggressive]",
    "exim-spam",
    "sendmail-auth",
    "sendmail-reject",
    "sendmail-reject[mode=extra]",
    "sendmail-reject[mode=aggressive]",
    "sieve",
    "solid-pop3d",
    "uwimap-auth",
    "assp",
    "oracleims",
    "perdition",
    "qmail",
];

/// `fail2ban:DIR/NAME.conf[OPTIONS]`: how a configuration names a stock
/// filter (see [`STOCK_MAIL_FILTERS`]).
pub fn stock_spec(dir: &str, filter: &str) -> String {
    let (name, opts) = match filter.split_once('[') {
        Some((n, o)) => (n, format!("[{o}")),
        None => (filter, String::new()),
    };
    format!("fail2ban:{dir}/{name}.conf{opts}")
}

use std::net::IpAddr;

use crate::filter::{Filter, LineMatch};

/// A part of a logged line that the client writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// `{NAME}` in the templates.
    pub name: &'static str,
    /// What it is, for messages: "the SASL user name".
    pub what: &'static str,
    /// The characters the client can put there.
    pub chars: Chars,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chars {
    /// Anything printable, spaces included (a quoted local part, a user name).
    Any,
    /// No white space (an SMTP argument the server splits on blanks).
    Word,
    /// A DNS name (the client's own reverse DNS): letters, digits, `.`, `-`.
    Hostname,
}

impl Chars {
    fn allows(self, s: &str) -> bool {
        match self {
            Chars::Any => !s.contains('\n'),
            Chars::Word => !s.contains(char::is_whitespace),
            Chars::Hostname => s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b)),
        }
    }
}

pub const FIELDS: &[Field] = &[
    Field {
        name: "USER",
        what: "the user name it logs in with",
        chars: Chars::Any,
    },
    Field {
        name: "HELO",
        what: "its HELO/EHLO name",
        chars: Chars::Word,
    },
    Field {
        name: "FROM",
        what: "its envelope sender (MAIL FROM)",
        chars: Chars::Any,
    },
    Field {
        name: "RCPT",
        what: "an envelope recipient (RCPT TO)",
        chars: Chars::Any,
    },
    Field {
        name: "PTR",
        what: "its reverse DNS name",
        chars: Chars::Hostname,
    },
    Field {
        name: "CMD",
        what: "the text of a command it sent",
        chars: Chars::Any,
    },
];

/// Log lines as the mail daemons write them: `{H}` is the client's address,
/// `{H4}` the same in IPv4-mapped form where a daemon writes that,
/// `{NAME}` a field the client writes ([`FIELDS`]). Each stands for a
/// failure of the client's: a filter reading it should report the client.
pub const TEMPLATES: &[&str] = &[
    // Postfix smtpd.
    "Nov 22 05:27:23 mx postfix/smtpd[4711]: warning: unknown[{H}]: SASL LOGIN authentication failed: UGFzc3dvcmQ6, sasl_username={USER}",
    "Nov 22 05:27:23 mx postfix/smtpd[4711]: warning: unknown[{H}]: SASL PLAIN authentication failed: authentication failure, sasl_username={USER}",
    "Nov 22 05:27:23 mx postfix/submission/smtpd[4711]: warning: {PTR}[{H}]: SASL LOGIN authentication failed: UGFzc3dvcmQ6",
    "Nov 22 05:27:23 mx postfix/smtpd[4711]: NOQUEUE: reject: RCPT from unknown[{H}]: 554 5.7.1 <{RCPT}>: Relay access denied; from=<{FROM}> to=<{RCPT}> proto=ESMTP helo=<{HELO}>",
    "Nov 22 05:27:23 mx postfix/smtpd[4711]: NOQUEUE: reject: RCPT from {PTR}[{H}]: 550 5.1.1 <{RCPT}>: Recipient address rejected: User unknown in local recipient table; from=<{FROM}> to=<{RCPT}> proto=ESMTP helo=<{HELO}>",
    "Nov 22 05:27:23 mx postfix/smtpd[4711]: NOQUEUE: reject: RCPT from unknown[{H}]: 554 5.7.1 Service unavailable; Client host [{H}] blocked using zen.spamhaus.org; from=<{FROM}> to=<{RCPT}> proto=ESMTP helo=<{HELO}>",
    "Nov 22 05:27:23 mx postfix/smtpd[4711]: NOQUEUE: reject: RCPT from unknown[{H}]: 504 5.5.2 <{HELO}>: Helo command rejected: need fully-qualified hostname; from=<{FROM}> to=<{RCPT}> proto=SMTP helo=<{HELO}>",
    "Nov 22 05:27:23 mx postfix/smtpd[4711]: NOQUEUE: reject: MAIL from unknown[{H}]: 553 5.7.1 <{FROM}>: Sender address rejected: not logged in; from=<{FROM}> proto=ESMTP helo=<{HELO}>",
    "Nov 22 05:27:23 mx postfix/smtpd[4711]: NOQUEUE: reject: VRFY from unknown[{H}]: 550 5.1.1 <{RCPT}>: Recipient address rejected: User unknown in local recipient table; to=<{RCPT}> proto=SMTP helo=<{HELO}>",
    "Nov 22 05:27:23 mx postfix/smtpd[4711]: lost connection after AUTH from {PTR}[{H}]",
    "Nov 22 05:27:23 mx postfix/smtpd[4711]: disconnect from {PTR}[{H}] ehlo=1 auth=0/1 quit=1 commands=2/3",
    "Nov 22 05:27:23 mx postfix/smtpd[4711]: lost connection after EHLO from {PTR}[{H}]",
    "Nov 22 05:27:23 mx postfix/smtpd[4711]: too many errors after RCPT from {PTR}[{H}]",
    "Nov 22 05:27:23 mx postfix/smtpd[4711]: improper command pipelining after EHLO from unknown[{H}]: {CMD}",
    "Nov 22 05:27:23 mx postfix/smtpd[4711]: warning: non-SMTP command from unknown[{H}]: {CMD}",
    "Nov 22 05:27:23 mx postfix/postscreen[4711]: PREGREET 14 after 0.01 from [{H}]:4711: EHLO {HELO}\\r\\n",
    "Nov 22 05:27:23 mx postfix/postscreen[4711]: NOQUEUE: reject: RCPT from [{H}]:4711: 550 5.7.1 Service unavailable; client [{H}] blocked using zen.spamhaus.org; from=<{FROM}>, to=<{RCPT}>, proto=ESMTP, helo=<{HELO}>",
    // Dovecot.
    "Nov 22 05:27:23 mx dovecot: imap-login: Disconnected (auth failed, 1 attempts in 2 secs): user=<{USER}>, method=PLAIN, rip={H}, lip=192.0.2.1, TLS, session=<k3Qd9Bf0Vp>",
    "Nov 22 05:27:23 mx dovecot: pop3-login: Aborted login (auth failed, 3 attempts in 10 secs): user=<{USER}>, method=LOGIN, rip={H}, lip=192.0.2.1, session=<YADINsQCDs5>",
    "Nov 22 05:27:23 mx dovecot: imap-login: Login aborted: Connection closed (auth failed, 1 attempts in 2 secs) (auth_failed): user=<{USER}>, method=PLAIN, rip={H}, lip=192.0.2.1, session=<x9Fq>",
    "Nov 22 05:27:23 mx dovecot: auth-worker(4711): pam({USER},{H},<k3Qd9Bf0Vp>): pam_authenticate() failed: Authentication failure (password mismatch?)",
    "Nov 22 05:27:23 mx dovecot: auth: passwd-file({USER},{H},<k3Qd9Bf0Vp>): unknown user",
    "Nov 22 05:27:23 mx dovecot: auth-worker(4711): sql({USER},{H},<k3Qd9Bf0Vp>): Password mismatch",
    "Nov 22 05:27:23 mx auth: pam_unix(dovecot:auth): authentication failure; logname= uid=0 euid=0 tty=dovecot ruser={USER} rhost={H}  user={USER}",
    // Kerio Connect's security log.
    "[22/Nov/2026 05:35:01] IP address {H} found in DNS blacklist SpamCop, mail from <{FROM}> to <{RCPT}> rejected",
    "[22/Nov/2026 05:35:03] SMTP: User {USER} doesn't exist. Attempt from IP address {H}.",
    "[22/Nov/2026 05:35:04] Relay attempt from IP address {H}, mail from <{FROM}> to <{RCPT}> rejected",
    "[22/Nov/2026 05:35:06] Attempt to deliver to unknown recipient <{RCPT}>, from <{FROM}>, IP address {H}",
    "[22/Nov/2026 05:35:07] Failed SMTP login from {H} with SASL method CRAM-MD5.",
    "[22/Nov/2026 05:35:10] Message from IP address {H}, sender <{FROM}> rejected: sender domain does not exist",
    // Courier.
    "Nov 22 05:27:23 mx imapd: LOGIN FAILED, user={USER}, ip=[{H4}]",
    "Nov 22 05:27:23 mx pop3d-ssl: LOGIN FAILED, method=PLAIN, user={USER}, ip=[{H4}]",
    "Nov 22 05:27:23 mx courieresmtpd: error,relay={H4},from=<{FROM}>,to=<{RCPT}>: 550 User unknown.",
    "Nov 22 05:27:23 mx courieresmtpd: error,relay={H4},msg=\"535 Authentication failed.\",cmd: AUTH PLAIN {CMD}",
    // Cyrus, timsieved.
    "Nov 22 05:27:23 mx imaps[4711]: badlogin: {PTR} [{H}] plaintext {USER} SASL(-13): authentication failure: checkpass failed",
    "Nov 22 05:27:23 mx sieve[4711]: badlogin: {PTR} [{H}] PLAIN authentication failure",
    // solid-pop3d, UW IMAP, perdition, qmail.
    "Nov 22 05:27:23 mx solid-pop3d[4711]: authentication failed: no such user: {USER} - {H}",
    "Nov 22 05:27:23 mx solid-pop3d[4711]: APOP authentication failed for user {USER} - {H}",
    "Nov 22 05:27:23 mx imapd[4711]: Login failed user={USER} auth={USER} host={PTR} [{H}]",
    "Nov 22 05:27:23 mx ipop3d[4711]: Failed CRAM-MD5 override of user={USER} host={PTR} [{H}]",
    "Nov 22 05:27:23 mx perdition.imaps[4711]: Auth: {H}:4000->192.0.2.1:993 client-secure=ssl authorisation_id=NONE authentication_id=\"{USER}\" server=\"192.0.2.2:143\" protocol=IMAP4S server-secure=plaintext status=\"failed: Re-Authentication Failure\"",
    "Nov 22 05:27:23 mx qmail: 1764000000.123456 rblsmtpd: {H} pid 4711 zen.spamhaus.org: 451 Blocked",
    "Nov 22 05:27:23 mx qmail: 1764000000.123456 qmail-smtpd: 451 badiprbl: ip {H} rbl: zen.spamhaus.org",
    // Oracle Communications Messaging Server.
    "<co ts=\"2026-11-22T05:27:23.123+00:00\" pi=\"0A1B.2C3D.4E5F\" sc=\"tcp_submit\" dr=\"+\" ac=\"U\" tr=\"TCP|192.0.2.1|587|{H}|52100\" ap=\"SMTP/TLS-128-AES128-SHA\" mi=\"Bad password\" us=\"{USER}\" di=\"535 5.7.8 Bad username or password (Authentication failed).\"/>",
    // Exim's main log.
    "2026-11-22 05:27:23 H=({HELO}) [{H}]:52100 F=<{FROM}> rejected RCPT <{RCPT}>: relay not permitted",
    "2026-11-22 05:27:23 dovecot_login authenticator failed for ({HELO}) [{H}]:52100: 535 Incorrect authentication data (set_id={USER})",
    "2026-11-22 05:27:23 H=({HELO}) [{H}] sender verify fail for <{FROM}>: Unknown user",
    "2026-11-22 05:27:23 SMTP call from ({HELO}) [{H}] dropped: too many nonmail commands (last was \"{CMD}\")",
    "2026-11-22 05:27:23 no MAIL in SMTP connection from ({HELO}) [{H}]:52100 D=3s C=EHLO,QUIT",
    "2026-11-22 05:27:23 SMTP protocol error in \"AUTH LOGIN\" H=({HELO}) [{H}] AUTH command used when not advertised",
    "2026-11-22 05:27:23 1a2B3c-000abc-Zz H=({HELO}) [{H}] F=<{FROM}> rejected after DATA: This message contains a virus (Eicar-Test-Signature).",
    "2026-11-22 05:27:23 H=({HELO}) [{H}] F=<{FROM}> rejected RCPT <{RCPT}>: listed in dnsbl zen.spamhaus.org",
    // Sendmail.
    "Nov 22 05:27:23 mx sm-mta[4711]: wAMN4Bx1000123: AUTH failure (LOGIN): authentication failure (-13) SASL(-13): authentication failure: checkpass failed, user={USER}, relay={PTR} [{H}]",
    "Nov 22 05:27:23 mx sm-mta[4711]: wAMN4Bx1000123: {PTR} [{H}]: possible SMTP attack: command=AUTH, count=5",
    "Nov 22 05:27:23 mx sm-mta[4711]: wAMN4Bx1000123: ruleset=check_rcpt, arg1=<{RCPT}>, relay=[{H}], reject=550 5.7.1 <{RCPT}>... Relaying denied. Proper authentication required.",
    "Nov 22 05:27:23 mx sm-mta[4711]: wAMN4Bx1000123: rejecting commands from [{H}] due to pre-greeting traffic after 0 seconds",
    "Nov 22 05:27:23 mx sm-mta[4711]: wAMN4Bx1000123: [{H}] did not issue MAIL/EXPN/VRFY/ETRN during connection to MTA",
    // Domino, ASSP.
    "[004711:000002-00007F] 22/11/2026 05:27:23   SMTP Server: Authentication failed for user {USER} ; connecting host [{H}]",
    "Nov-22-26 05:27:23 [Worker_1] {H} [SMTP Error] 535 5.7.8 Error: authentication failed: {USER}",
];

/// The client making the failures of the corpus, and the innocent
/// addresses its fields name.
pub const CLIENT_V4: &str = "203.0.113.66";
pub const CLIENT_V6: &str = "2001:db8:bad:1::66";
pub const INNOCENT_V4: &str = "198.51.100.23";
pub const INNOCENT_V6: &str = "2001:db8:feed::23";

/// Every way a daemon writes an address that a host tag of some filter
/// reads, for address `a` (IPv4 forms with an IPv4 address only).
pub fn host_forms(a: &str) -> Vec<String> {
    let v4 = !a.contains(':');
    let mut f = vec![
        a.to_string(),
        format!("[{a}]"),
        format!("unknown[{a}]"),
        format!("mail.example[{a}]"),
        format!("from {a}"),
        format!("from unknown[{a}]"),
        format!("IP address {a}"),
        format!("rip={a}"),
        format!("rhost={a}"),
        format!("relay=[{a}]"),
        format!("relay=unknown [{a}]"),
        format!("host={a}"),
        format!("host=x [{a}]"),
        format!("client={a}"),
        format!("({a})"),
        format!("<{a}>"),
        format!("{a}:25"),
        format!("[{a}]:25"),
        format!(",{a},"),
        format!("- {a}"),
        format!("ip=[{a}]"),
    ];
    if v4 {
        f.extend([
            format!("::ffff:{a}"),
            format!("ip=[::ffff:{a}]"),
            format!("relay=::ffff:{a},"),
        ]);
    } else {
        f.extend([format!("[IPv6:{a}]"), format!("relay=[IPv6:{a}]")]);
    }
    f
}

/// One line of the corpus: a template with the client's address and one
/// field carrying text that names `innocent`.
#[derive(Debug, Clone)]
pub struct Probe {
    pub template: usize,
    pub field: Field,
    pub client: IpAddr,
    pub innocent: IpAddr,
    pub line: String,
}

/// The template's line for `client` with every field at an ordinary value
/// except `field` (all its occurrences), which holds `value`.
pub fn fill(template: &str, client: &str, field: Option<(&str, &str)>) -> String {
    let mapped = if client.contains(':') {
        client.to_string()
    } else {
        format!("::ffff:{client}")
    };
    let mut out = template.replace("{H4}", &mapped).replace("{H}", client);
    for f in FIELDS {
        let tag = format!("{{{}}}", f.name);
        if !out.contains(&tag) {
            continue;
        }
        let v = match field {
            Some((name, v)) if name == f.name => v.to_string(),
            _ => ordinary(f.name).to_string(),
        };
        out = out.replace(&tag, &v);
    }
    out
}

fn ordinary(field: &str) -> &'static str {
    match field {
        "USER" => "admin",
        "HELO" => "client.example",
        "FROM" => "alice@example.net",
        "RCPT" => "bob@example.com",
        "PTR" => "host.example",
        _ => "QUIT",
    }
}

/// The fields a template has, in the order of [`FIELDS`].
pub fn fields_of(template: &str) -> Vec<Field> {
    FIELDS
        .iter()
        .copied()
        .filter(|f| template.contains(&format!("{{{}}}", f.name)))
        .collect()
}

/// What a client puts in a field to name `innocent`: each host form, as
/// it is and closing the field first (`>`, `]`, `,`, ...), bare or
/// followed by what comes after an address in logged lines; and every
/// template's own line, whole and from its message on, with the innocent
/// address in the client's place.
pub fn payloads(innocent: &str) -> Vec<String> {
    let mut out = Vec::new();
    for form in host_forms(innocent) {
        for open in ["", "x>, ", "x], ", "x, ", " "] {
            for close in ["", ": ", " ", "]", ">"] {
                out.push(format!("{open}{form}{close}"));
            }
        }
    }
    for t in TEMPLATES {
        let line = fill(t, innocent, None);
        // The message: after the syslog header's "daemon[pid]: " or a stamp.
        if let Some(i) = line
            .find("]: ")
            .map(|i| i + 3)
            .or_else(|| line.find("] ").map(|i| i + 2))
        {
            out.push(line[i..].to_string());
            out.push(format!("x {}", &line[i..]));
        }
        out.push(line);
    }
    out.sort();
    out.dedup();
    out
}

/// Payloads made of the template's own text around `field`, with the
/// innocent address in the client's place: the field closed (`x` and the
/// character that follows the field in the line), then the line from each
/// word before the field up to the field, or to the end; and the rest of
/// the line after the field. What a client writes to make its line look
/// like a failure of the innocent address, whatever the pattern anchors.
pub fn replays(template: &str, field: &Field, innocent: &str) -> Vec<String> {
    let tag = format!("{{{}}}", field.name);
    let Some(at) = template.find(&tag) else {
        return Vec::new();
    };
    let before = fill(&template[..at], innocent, None);
    let after = fill(&template[at + tag.len()..], innocent, None);
    let whole = format!("{before}{after}");
    let close = after
        .chars()
        .next()
        .filter(|c| c.is_ascii_punctuation())
        .map(String::from)
        .unwrap_or_default();
    let starts = std::iter::once(0).chain(
        before
            .char_indices()
            .filter(|&(_, c)| " ([<\",|".contains(c))
            .map(|(i, c)| i + c.len_utf8()),
    );
    let mut out = vec![format!("x{after}")];
    for k in starts {
        out.push(format!("x{close} {}", &before[k..]));
        out.push(format!("x{close} {}", &whole[k..]));
        out.push(format!("x{close}{}", &before[k..]));
    }
    out
}

/// The client/innocent address pairs of the corpus, one per family.
const PAIRS: [(&str, &str); 2] = [(CLIENT_V4, INNOCENT_V4), (CLIENT_V6, INNOCENT_V6)];

/// The corpus lines of template `ti` for `client`: each of its fields
/// holding each payload naming `innocent` ([`replays`] of the template,
/// then the common `payloads`).
fn template_probes<'a>(
    ti: usize,
    (client, innocent): (&'a str, &'a str),
    payloads: &'a [String],
) -> impl Iterator<Item = Probe> + 'a {
    let t = TEMPLATES[ti];
    let c: IpAddr = client.parse().expect("client address");
    let i: IpAddr = innocent.parse().expect("innocent address");
    fields_of(t).into_iter().flat_map(move |f| {
        replays(t, &f, innocent)
            .into_iter()
            .chain(payloads.iter().cloned())
            .filter(move |p| f.chars.allows(p))
            .map(move |p| Probe {
                template: ti,
                field: f,
                client: c,
                innocent: i,
                line: fill(t, client, Some((f.name, &p))),
            })
    })
}

/// The whole corpus: every template, for a client of each family, with
/// each of its fields holding each payload naming an innocent address of
/// the same family.
pub fn corpus() -> Vec<Probe> {
    let mut out = Vec::new();
    for pair in PAIRS {
        let payloads = payloads(pair.1);
        for ti in 0..TEMPLATES.len() {
            out.extend(template_probes(ti, pair, &payloads));
        }
    }
    out
}

/// A way a filter was made to report another address than the client's.
#[derive(Debug, Clone)]
pub struct Framed {
    pub field: Field,
    /// The failregex that reported it.
    pub regex: usize,
    /// The address reported.
    pub reported: IpAddr,
    pub line: String,
}

/// What the corpus did to one filter.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Corpus lines of templates the filter reads (it reports the client
    /// on the template's ordinary line).
    pub checked: usize,
    /// The failregexes that reported the client on some ordinary line.
    pub exercised: std::collections::BTreeSet<usize>,
    /// One example per (field, failregex) that reported another address.
    pub framed: Vec<Framed>,
    /// Lines that reported another address, all told.
    pub innocent_bans: usize,
}

/// Runs the corpus through `filter`: only templates the filter reads (on
/// whose ordinary line it reports the client) count, and only their
/// lines are made.
pub fn probe(filter: &Filter) -> Report {
    let mut r = Report::default();
    for pair @ (client, _) in PAIRS {
        let c: IpAddr = client.parse().expect("client address");
        let reads = |t: &str, r: &mut Report| match filter.check(&fill(t, client, None)) {
            LineMatch::Failure(h) if h.host == c => {
                r.exercised.insert(h.regex_index);
                true
            }
            _ => false,
        };
        let read: Vec<usize> = (0..TEMPLATES.len())
            .filter(|&ti| reads(TEMPLATES[ti], &mut r))
            .collect();
        // Lines with no field a client writes cannot be framed; they
        // count as read.
        r.checked += read
            .iter()
            .filter(|&&ti| fields_of(TEMPLATES[ti]).is_empty())
            .count();
        if read.is_empty() {
            continue;
        }
        let payloads = payloads(pair.1);
        for &ti in &read {
            for p in template_probes(ti, pair, &payloads) {
                r.checked += 1;
                if let LineMatch::Failure(h) = filter.check(&p.line)
                    && h.host != p.client
                {
                    r.innocent_bans += 1;
                    if !r
                        .framed
                        .iter()
                        .any(|f| f.field == p.field && f.regex == h.regex_index)
                    {
                        r.framed.push(Framed {
                            field: p.field,
                            regex: h.regex_index,
                            reported: h.host,
                            line: p.line,
                        });
                    }
                }
            }
        }
    }
    r
}
