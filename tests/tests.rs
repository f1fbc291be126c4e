
mod federation;
mod foundation;
mod report;
