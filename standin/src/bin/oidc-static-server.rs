//! `oidc-static-server`: serves a directory over HTTPS with the test CA, for end-to-end tests.
//!
//! Prints `listening on https://ADDR` as its only stdout line, then serves until killed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use standin::static_server::StaticServer;

#[derive(Debug, Parser)]
#[command(version, about = "Serves a directory of issuer documents over HTTPS")]
struct Args {
    /// The directory to serve: `DIR/PATH` is served at `https://ADDR/PATH`.
    #[arg(long)]
    dir: PathBuf,
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Directory holding the test CA (`ca.crt`) and server certificate; created if needed.
    #[arg(long)]
    tls_dir: PathBuf,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    match StaticServer::start(&args.dir, args.listen, &args.tls_dir).await {
        Ok(server) => {
            println!("listening on {}", server.url());
            std::future::pending::<()>().await;
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("oidc-static-server: {e}");
            ExitCode::FAILURE
        }
    }
}
