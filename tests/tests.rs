
mod common;
mod comparisons;
mod docs;
mod federation;
mod foundation;
mod report;
mod reliability;
mod studies;
