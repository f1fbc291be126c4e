
mod common;
mod federation;
mod foundation;
mod report;
mod reliability;
