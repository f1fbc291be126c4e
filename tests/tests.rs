
mod common;
mod comparisons;
mod federation;
mod foundation;
mod report;
mod reliability;
mod studies;
