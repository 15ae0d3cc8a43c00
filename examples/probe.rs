//! Prints the wait backend this process gets (honouring `AFX_BACKEND`), or
//! why it cannot start; exits non-zero in that case. Used by the test script.
fn main() {
    match asyncfutex::backend() {
        Ok(kind) => println!("backend {kind}"),
        Err(e) => {
            println!("backend unavailable: {e}");
            std::process::exit(1);
        }
    }
}
