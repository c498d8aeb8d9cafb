use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = rxla::cli::Cli::parse();
    match rxla::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
