//! The login page: what it shows ([`LoginPage`]), the default look ([`default_login_page`]:
//! inline CSS, no external assets), and [`LoginTemplate`], to render it with the app's own
//! template instead.

use std::fmt::{self, Write as _};

use crate::provider::{FieldKind, FormField};

use super::form::escape_html;

/// The notice the login page shows after a logout.
pub const LOGGED_OUT: &str = "You have been logged out.";

/// The notice the login page shows to a browser whose session came from another server of the
/// app (several instances sharing sessions through Redis) when a page needs a login connection,
/// which cannot cross servers.
pub const LOG_IN_HERE: &str =
    "You are logged in on another server of this app; log in again here to reach this connection.";

/// Everything a login page shows, handed to a [`LoginTemplate`]. The strings are raw text:
/// escape them with [`escape_html`] (or use [`form_html`](Self::form_html) and
/// [`csrf_field`](Self::csrf_field), which are escaped already).
#[derive(Debug)]
#[non_exhaustive]
pub struct LoginPage<'a> {
    /// The app's title ([`WebSessions::title`](super::WebSessions::title); default `Log in`).
    pub title: &'a str,
    /// Where the form posts to: the configured login path.
    pub action: &'a str,
    /// The form's fields (from the provider's derived form description) with the values to
    /// show: what the user typed before for text fields, the default otherwise; always empty
    /// for password fields.
    pub fields: Vec<LoginField<'a>>,
    /// Why the last attempt failed ([`LOGIN_FAILED`](super::LOGIN_FAILED), a missing field,
    /// too many failures…), shown as an error.
    pub error: Option<&'a str>,
    /// A notice that is not an error, such as [`LOGGED_OUT`] after a logout.
    pub notice: Option<&'a str>,
    /// The CSRF token the form must send back as the `_csrf` field.
    pub csrf_token: &'a str,
}

/// One input of a [`LoginPage`].
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub struct LoginField<'a> {
    /// The provider's description of the field: name (the input's name), label, kind.
    pub field: &'a FormField,
    /// The value to pre-fill (never a secret).
    pub value: &'a str,
}

impl LoginField<'_> {
    /// The input's `type`: `text` or `password`.
    pub fn input_type(&self) -> &'static str {
        match self.field.kind {
            FieldKind::Text => "text",
            FieldKind::Password => "password",
        }
    }
}

impl LoginPage<'_> {
    /// The hidden input carrying the CSRF token: put it inside your `<form>`.
    pub fn csrf_field(&self) -> String {
        format!("<input type=\"hidden\" name=\"_csrf\" value=\"{}\">", escape_html(self.csrf_token))
    }

    /// The whole `<form>` (CSRF field, one labelled input per field, the submit button), escaped,
    /// for a template that wants its own page around the standard form.
    pub fn form_html(&self) -> String {
        let mut html = format!("<form method=\"post\" action=\"{}\">\n", escape_html(self.action));
        html.push_str(&self.csrf_field());
        html.push('\n');
        for f in &self.fields {
            let _ = writeln!(
                html,
                "<p><label for=\"{n}\">{l}</label> <input id=\"{n}\" name=\"{n}\" type=\"{kind}\" value=\"{v}\"{r}{a}></p>",
                n = escape_html(f.field.name),
                l = escape_html(f.field.label),
                kind = f.input_type(),
                v = escape_html(f.value),
                r = if f.field.required { " required" } else { "" },
                a = match f.field.kind {
                    FieldKind::Text => " autocomplete=\"username\"",
                    FieldKind::Password => " autocomplete=\"current-password\"",
                },
            );
        }
        html.push_str("<p><button type=\"submit\">Log in</button></p>\n</form>\n");
        html
    }
}

/// Renders the login page: the default look ([`default_login_page`]) or the app's own.
///
/// Any `Fn(&LoginPage) -> String` is one:
///
/// ```
/// use connscope::web::{LoginPage, escape_html};
///
/// fn my_login_page(page: &LoginPage<'_>) -> String {
///     let error = page.error.map(|e| format!("<div class=\"alert\">{}</div>", escape_html(e)));
///     format!(
///         "<!doctype html><title>{}</title><link rel=stylesheet href=/app.css>{}{}",
///         escape_html(page.title),
///         error.unwrap_or_default(),
///         page.form_html(),
///     )
/// }
/// # let rt = connscope::Runtime::builder().build();
/// let web = connscope::web::WebSessions::new(rt).login_template(my_login_page);
/// ```
pub trait LoginTemplate: Send + Sync + 'static {
    /// The page's HTML. Escape every string of `page` you put in it ([`escape_html`]).
    fn render(&self, page: &LoginPage<'_>) -> String;
}

impl<F> LoginTemplate for F
where
    F: Fn(&LoginPage<'_>) -> String + Send + Sync + 'static,
{
    fn render(&self, page: &LoginPage<'_>) -> String {
        self(page)
    }
}

/// The default template, as a value (what [`WebSessions`](super::WebSessions) uses unless told
/// otherwise).
#[derive(Clone, Copy, Debug, Default)]
pub struct DefaultLoginPage;

impl LoginTemplate for DefaultLoginPage {
    fn render(&self, page: &LoginPage<'_>) -> String {
        default_login_page(page)
    }
}

/// Shared handle on a template, printable for `Debug` of the configuration.
#[derive(Clone)]
pub(crate) struct Template(pub(crate) std::sync::Arc<dyn LoginTemplate>);

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LoginTemplate")
    }
}

/// connscope's login page: a centred card with the app's title, the error in a red box
/// (`p.error`, `role="alert"`), a notice such as [`LOGGED_OUT`] in a green one (`p.notice`,
/// `role="status"`), and the form. Its CSS is inline: no external assets.
pub fn default_login_page(page: &LoginPage<'_>) -> String {
    let title = escape_html(page.title);
    let heading =
        if page.title == "Log in" { String::new() } else { format!("<p class=\"app\">{title}</p>\n") };
    let mut html = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title><style>{STYLE}</style></head>\n<body><main class=\"card\">\n{heading}<h1>Log in</h1>\n",
        if page.title == "Log in" { title.clone() } else { format!("Log in · {title}") },
    );
    if let Some(notice) = page.notice {
        let _ = writeln!(html, "<p class=\"notice\" role=\"status\">{}</p>", escape_html(notice));
    }
    if let Some(error) = page.error {
        let _ = writeln!(html, "<p class=\"error\" role=\"alert\">{}</p>", escape_html(error));
    }
    html.push_str(&page.form_html());
    html.push_str("</main></body></html>\n");
    html
}

const STYLE: &str = "*{box-sizing:border-box}\
body{margin:0;min-height:100vh;display:flex;align-items:center;justify-content:center;\
font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;background:#eef1f6;color:#1f2933}\
.card{width:min(24rem,calc(100vw - 2rem));background:#fff;border-radius:12px;padding:2rem 2rem 1.5rem;\
box-shadow:0 1px 3px rgba(15,23,42,.12),0 8px 24px rgba(15,23,42,.08)}\
.app{margin:0 0 .2rem;font-size:.85rem;font-weight:600;letter-spacing:.04em;text-transform:uppercase;color:#52606d}\
h1{margin:0 0 1.2rem;font-size:1.5rem}\
form p{margin:0 0 1rem}\
label{display:block;margin-bottom:.35rem;font-size:.9rem;font-weight:600}\
input{width:100%;padding:.6rem .7rem;border:1px solid #cbd2d9;border-radius:8px;font-size:1rem}\
input:focus{outline:2px solid #2563eb;outline-offset:1px;border-color:#2563eb}\
button{width:100%;padding:.65rem;border:0;border-radius:8px;background:#2563eb;color:#fff;\
font-size:1rem;font-weight:600;cursor:pointer}button:hover{background:#1d4ed8}\
.error{margin:0 0 1rem;padding:.7rem .85rem;border:1px solid #f5a3a3;border-left:4px solid #c81e1e;\
border-radius:8px;background:#fdecec;color:#9b1c1c}\
.notice{margin:0 0 1rem;padding:.7rem .85rem;border:1px solid #a7e3bd;border-left:4px solid #1e8e4e;\
border-radius:8px;background:#e9f8ef;color:#14532d}";

#[cfg(test)]
mod tests {
    use super::*;

    const FIELDS: &[FormField] = &[
        FormField {
            name: "user",
            label: "User <name>",
            kind: FieldKind::Text,
            default: None,
            required: true,
        },
        FormField {
            name: "password",
            label: "Password",
            kind: FieldKind::Password,
            default: None,
            required: true,
        },
    ];

    fn page<'a>(error: Option<&'a str>, notice: Option<&'a str>) -> LoginPage<'a> {
        LoginPage {
            title: "Sales & co",
            action: "/signin",
            fields: vec![
                LoginField { field: &FIELDS[0], value: "\"ada\"" },
                LoginField { field: &FIELDS[1], value: "" },
            ],
            error,
            notice,
            csrf_token: "t0k\"en",
        }
    }

    #[test]
    fn the_default_page_escapes_everything_and_shows_title_error_and_notice() {
        let html = default_login_page(&page(Some("<b>no</b>"), Some(LOGGED_OUT)));
        assert!(html.contains("<title>Log in · Sales &amp; co</title>"), "{html}");
        assert!(html.contains("<p class=\"app\">Sales &amp; co</p>"));
        assert!(html.contains("<p class=\"error\" role=\"alert\">&lt;b&gt;no&lt;/b&gt;</p>"));
        assert!(html.contains("<p class=\"notice\" role=\"status\">You have been logged out.</p>"));
        assert!(html.contains("action=\"/signin\""));
        assert!(html.contains("name=\"_csrf\" value=\"t0k&quot;en\""));
        assert!(html.contains("<label for=\"user\">User &lt;name&gt;</label>"));
        assert!(html.contains("value=\"&quot;ada&quot;\""));
        assert!(!html.contains("http://") && !html.contains("https://"), "no external assets");
        let plain = default_login_page(&page(None, None));
        assert!(!plain.contains("role=\"alert\"") && !plain.contains("role=\"status\""));
    }
}
