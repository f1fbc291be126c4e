
mod common;
mod comparisons;
mod docs;
mod federation;
mod foundation;
mod privacy;
mod report;
mod reliability;
mod studies;
