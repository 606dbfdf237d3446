//! Frames of `sensor watch` rendered on a TestBackend, pinned with insta.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

use super::app::{App, AppEvent};
use super::fixtures::{stats, varied_findings};
use super::ui;

fn draw(app: &App, w: u16, h: u16) -> String {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| ui::render(app, f)).unwrap();
    let buf = t.backend().buffer().clone();
    let mut out = String::new();
    for y in 0..h {
        for x in 0..w {
            out.push_str(buf[(x, y)].symbol());
        }
        out.push('\n');
    }
    out
}

fn key(c: KeyCode) -> AppEvent {
    AppEvent::Key(KeyEvent::new(c, KeyModifiers::NONE))
}

fn loaded() -> App {
    let mut app = App::new("http://127.0.0.1:9478");
    app.update(AppEvent::Connected);
    app.update(AppEvent::Stats(Box::new(stats())));
    app.update(AppEvent::Backfill(varied_findings()));
    app.update(AppEvent::Stats(Box::new(stats())));
    app
}

#[test]
fn empty_state() {
    let app = App::new("http://127.0.0.1:9478");
    insta::assert_snapshot!(draw(&app, 120, 30));
}

#[test]
fn many_findings_grouped() {
    let s = draw(&loaded(), 140, 30);
    assert!(s.contains("GET /v1/items"));
    insta::assert_snapshot!(s);
}

#[test]
fn detail_pane() {
    let mut app = loaded();
    app.update(key(KeyCode::Down));
    app.update(key(KeyCode::Enter));
    let s = draw(&app, 120, 40);
    assert!(s.contains("finding detail"));
    insta::assert_snapshot!(s);
}

#[test]
fn filter_active() {
    let mut app = loaded();
    app.update(key(KeyCode::Char('/')));
    for c in "sink:location".chars() {
        app.update(key(KeyCode::Char(c)));
    }
    let s = draw(&app, 120, 30);
    assert!(s.contains("findings 1/5"));
    insta::assert_snapshot!(s);
}

#[test]
fn sensor_unreachable() {
    let mut app = App::new("http://127.0.0.1:9478");
    app.update(AppEvent::Unreachable {
        error: "connection refused".into(),
        retry_in_s: 2,
    });
    let s = draw(&app, 120, 30);
    assert!(s.contains(
        "sensor at http://127.0.0.1:9478 unreachable: connection refused — retrying in 2s"
    ));
    insta::assert_snapshot!(s);
}

#[test]
fn small_terminal_80x24() {
    let mut app = loaded();
    let mut s = stats();
    s.lost_events = 12;
    app.update(AppEvent::Stats(Box::new(s)));
    app.update(key(KeyCode::Char('p')));
    insta::assert_snapshot!(draw(&app, 80, 24));
}

#[test]
fn help_overlay() {
    let mut app = loaded();
    app.update(key(KeyCode::Char('?')));
    insta::assert_snapshot!(draw(&app, 100, 30));
}

#[test]
fn tiny_terminal_does_not_panic() {
    let app = loaded();
    for (w, h) in [(1, 1), (10, 5), (20, 3), (0, 0)] {
        let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
        t.draw(|f| ui::render(&app, f)).unwrap();
    }
    let mut app = loaded();
    app.update(key(KeyCode::Enter));
    app.update(key(KeyCode::Char('?')));
    let mut t = Terminal::new(TestBackend::new(12, 6)).unwrap();
    t.draw(|f| ui::render(&app, f)).unwrap();
}

#[test]
fn five_digit_counts_are_abbreviated_not_cut() {
    // 13 340 in a 4-wide column was cut to "1334"; the detail view says 13340.
    for (w, h) in [(140, 30), (80, 24)] {
        let mut app = loaded();
        app.groups[0].count = 13_340;
        let s = draw(&app, w, h);
        let row = s
            .lines()
            .find(|l| l.contains("GET /oauth") && l.contains(" 302 "))
            .unwrap_or_else(|| panic!("{w}x{h}: no table row of the group:\n{s}"));
        assert!(row.contains(" 13k "), "{w}x{h}: {row}");
        assert!(!row.contains("1334"), "{w}x{h}: a cut count: {row}");
    }
}
