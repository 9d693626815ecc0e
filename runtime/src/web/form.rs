//! The login flow: a page rendered from a provider's derived form description, a submit
//! handler that checks the CSRF token, builds the settings, logs the session in and renews the
//! cookie id, a logout handler, and the [`LoggedIn`] extractor that gates pages.

use std::fmt::Write as _;
use std::marker::PhantomData;

use axum::Router;
use axum::extract::{Form, FromRequestParts};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};

use super::sessions::WebSession;
use crate::conn::Conn;
use crate::error::Error;
use crate::form::FormValues;
use crate::provider::{Connection, FieldKind};

/// Extracts the logged-in connection of provider `P` (named `P::NAME`, or as set with
/// [`WebSessions::connection_name`](super::WebSessions::connection_name)), or redirects to the
/// login page when the session has none, or when it was found closed.
pub struct LoggedIn<P: Connection>(pub Conn<P>);

impl<P, S> FromRequestParts<S> for LoggedIn<P>
where
    P: Connection,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let web = WebSession::from_request_parts(parts, state).await?;
        match web.session().logged_in::<P>(web.web().config().name_of::<P>()).await {
            Ok(conn) => Ok(LoggedIn(conn)),
            Err(_) => Err(Redirect::to(&web.web().config().login_path).into_response()),
        }
    }
}

/// `GET` and `POST` on the login path, and `POST /logout`, for provider `P`.
pub fn login_routes<P: Connection>() -> Router {
    Router::new()
        .route("/login", get(login_form::<P>).post(login_submit::<P>))
        .route("/logout", post(logout::<P>))
}

/// Renders the login form of provider `P` (secret fields are password inputs).
pub async fn login_form<P: Connection>(web: WebSession) -> Html<String> {
    Html(render::<P>(&web, None, &FormValues::new()))
}

/// Accepts the login form: checks the CSRF token, builds `P` from the fields, connects. On
/// success the cookie id is renewed and the browser sent home; on failure the form is shown
/// again with what went wrong (never with the secrets that were typed).
pub async fn login_submit<P: Connection>(
    web: WebSession,
    Form(fields): Form<Vec<(String, String)>>,
) -> Response {
    let token = fields.iter().find(|(k, _)| k == "_csrf").map(|(_, v)| v.as_str()).unwrap_or("");
    if !web.check_csrf(token) {
        return (StatusCode::FORBIDDEN, "the form expired or came from another site: reload the login page")
            .into_response();
    }
    // Fields the app fixes (a server URL…) come from `[connections.<name>]`, never from the form.
    let name = web.web().config().name_of::<P>().to_owned();
    let fixed = web.session().runtime().shared.config.section(&name).unwrap_or_default();
    let values = FormValues::submitted(fields.into_iter().filter(|(k, _)| k != "_csrf")).fix_all(fixed);
    let settings = match P::from_form(&values) {
        Ok(settings) => settings,
        Err(e) => {
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                Html(render::<P>(&web, Some(&e.to_string()), &values)),
            )
                .into_response();
        }
    };
    match web.session().login(&name, settings).await {
        Ok(_) => {
            web.renew_id();
            Redirect::to(&web.web().config().home_path).into_response()
        }
        Err(e) => {
            let message = match &e {
                Error::Connect { source, .. } => format!("could not log in: {source}"),
                other => other.to_string(),
            };
            (StatusCode::UNAUTHORIZED, Html(render::<P>(&web, Some(&message), &values))).into_response()
        }
    }
}

/// Logs out: ends the session (closing its connections) and sends the browser to the login page.
pub async fn logout<P: Connection>(web: WebSession, Form(fields): Form<Vec<(String, String)>>) -> Response {
    let token = fields.iter().find(|(k, _)| k == "_csrf").map(|(_, v)| v.as_str()).unwrap_or("");
    if !web.check_csrf(token) {
        return (StatusCode::FORBIDDEN, "the form expired or came from another site").into_response();
    }
    let _ = web.end().await;
    let _ = PhantomData::<P>;
    Redirect::to(&web.web().config().login_path).into_response()
}

/// A logout button for a page of this session (a POST form carrying the CSRF token).
pub fn logout_button(web: &WebSession) -> String {
    format!(
        r#"<form method="post" action="/logout"><input type="hidden" name="_csrf" value="{}"><button type="submit">Log out</button></form>"#,
        escape_html(web.csrf_token())
    )
}

fn render<P: Connection>(web: &WebSession, error: Option<&str>, previous: &FormValues) -> String {
    let mut html = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Log in</title></head><body><main>\n<h1>Log in</h1>\n",
    );
    if let Some(error) = error {
        let _ = writeln!(html, "<p class=\"error\" role=\"alert\">{}</p>", escape_html(error));
    }
    html.push_str("<form method=\"post\" action=\"/login\">\n");
    let _ =
        writeln!(html, "<input type=\"hidden\" name=\"_csrf\" value=\"{}\">", escape_html(web.csrf_token()));
    for field in P::FORM {
        let kind = match field.kind {
            FieldKind::Text => "text",
            FieldKind::Password => "password",
        };
        // Text fields keep what the user typed; password fields never echo anything back.
        let value = match field.kind {
            FieldKind::Text => previous.get(field.name).or(field.default).unwrap_or(""),
            FieldKind::Password => "",
        };
        let _ = writeln!(
            html,
            "<p><label for=\"{n}\">{l}</label> <input id=\"{n}\" name=\"{n}\" type=\"{kind}\" value=\"{v}\"{r}></p>",
            n = escape_html(field.name),
            l = escape_html(field.label),
            v = escape_html(value),
            r = if field.required { " required" } else { "" },
        );
    }
    html.push_str("<p><button type=\"submit\">Log in</button></p>\n</form>\n</main></body></html>\n");
    html
}

/// Escapes text for HTML content and attribute values (`&`, `<`, `>`, `"`, `'`).
///
/// ```
/// assert_eq!(connscope::web::escape_html("<b a='1'>"), "&lt;b a=&#39;1&#39;&gt;");
/// ```
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
