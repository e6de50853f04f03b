//! Rebuilds when a migration changes: `sqlx::migrate!` embeds them at compile time.

fn main() {
    for dir in ["migrations", "migrations-sqlite", "migrations-postgres"] {
        if std::path::Path::new(dir).exists() {
            println!("cargo:rerun-if-changed={dir}");
        }
    }
}
