//! Reference data: cloud providers, storage engines, industries (the NAICS sectors), job
//! functions, asset use cases and subscription plans. Defined once here; every metadata-store migration writes it
//! into its tables (so queries can join it), and the read routes serve it from here.
//! Tenants cannot change it.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CloudProvider {
    pub provider_id: i32,
    pub name: &'static str,
    pub parent_company: Option<&'static str>,
    pub marketing_homepage_url: Option<&'static str>,
}

/// A kind of database or storage a seller may connect. `integration_complete` is true exactly
/// for the engines with a `driver`: those the `sources` crate connects to and tests
/// (PostgreSQL and SQLite files so far).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StorageEngine {
    pub engine_id: i32,
    pub provider_id: i32,
    pub service_name: &'static str,
    /// `EDW`, `RDBMS`, `OBJ`, `LLM` or `API_MODEL`.
    pub engine_type: &'static str,
    pub integration_complete: bool,
    pub test_func_complete: bool,
    /// The `sources` driver that reaches it (`sources::Driver::from_name`), if any.
    #[serde(skip)]
    pub driver: Option<&'static str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Industry {
    pub industry_id: i32,
    pub industry_name: &'static str,
    pub short_name: &'static str,
    pub slug: &'static str,
    /// The NAICS 2022 sector code (a range such as `31-33` for some sectors).
    pub naisc_code: &'static str,
    pub description: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct JobFunction {
    pub function_id: i32,
    pub name: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AssetUseCase {
    pub auc_id: i32,
    pub auc_name: &'static str,
    pub slug: &'static str,
    pub auc_description: &'static str,
}

/// A subscription plan (seed `004`): per-key limits and the company's monthly request
/// allocation. `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// `starter`, `professional` or `enterprise`: what `PUT …/subscription` takes.
    pub plan_id: &'static str,
    pub name: &'static str,
    pub requests_per_minute: Option<u32>,
    pub requests_per_day: Option<u32>,
    pub concurrent_requests: u32,
    /// Requests a company may make per monthly period, across its keys.
    pub monthly_requests: Option<u64>,
}

/// The plans, cheapest first. The per-key limits are seed `004`'s; the monthly allocation is
/// Tally's: thirty days of the daily limit (unlimited for Enterprise).
pub const PLANS: &[Plan] = &[
    Plan {
        plan_id: "starter",
        name: "Starter",
        requests_per_minute: Some(60),
        requests_per_day: Some(10_000),
        concurrent_requests: 5,
        monthly_requests: Some(300_000),
    },
    Plan {
        plan_id: "professional",
        name: "Professional",
        requests_per_minute: Some(300),
        requests_per_day: Some(100_000),
        concurrent_requests: 15,
        monthly_requests: Some(3_000_000),
    },
    Plan {
        plan_id: "enterprise",
        name: "Enterprise",
        requests_per_minute: None,
        requests_per_day: None,
        concurrent_requests: 50,
        monthly_requests: None,
    },
];

/// The plan with id `plan_id`.
pub fn plan(plan_id: &str) -> Option<&'static Plan> {
    PLANS.iter().find(|p| p.plan_id == plan_id)
}

/// The plan a company is on without a subscription: the operator's company on Enterprise,
/// every tenant on Starter.
pub fn default_plan(is_operator: bool) -> &'static Plan {
    if is_operator {
        &PLANS[2]
    } else {
        &PLANS[0]
    }
}

/// The plan and period of `c`: (plan, first period start). Without a subscription, its
/// default plan with periods counted from its creation.
/// A subscription's own `monthly_requests` replaces the plan's allocation.
pub fn effective(c: &crate::Company) -> (Plan, i64) {
    match &c.subscription {
        Some(s) => {
            let mut p = *plan(&s.plan_id).unwrap_or(default_plan(c.state.is_operator));
            if let Some(n) = s.monthly_requests {
                p.monthly_requests = Some(n.max(0) as u64);
            }
            (p, s.period_start_ms)
        }
        None => (*default_plan(c.state.is_operator), c.state.created_at_ms),
    }
}

/// The monthly period that holds `now_ms`, for periods that start at `start_ms` and each last
/// one calendar month (UTC; a start on the 31st ends on the last day of shorter months).
pub fn current_period(start_ms: i64, now_ms: i64) -> (i64, i64) {
    use chrono::{Months, TimeZone, Utc};
    let Some(start) = Utc.timestamp_millis_opt(start_ms).single() else {
        return (start_ms, start_ms);
    };
    let nth = |k: u32| {
        start
            .checked_add_months(Months::new(k))
            .map_or(i64::MAX, |t| t.timestamp_millis())
    };
    let mut k = 0u32;
    while nth(k + 1) <= now_ms && k < 12 * 1000 {
        k += 1;
    }
    (nth(k), nth(k + 1))
}

const fn provider(
    provider_id: i32,
    name: &'static str,
    parent_company: Option<&'static str>,
    marketing_homepage_url: Option<&'static str>,
) -> CloudProvider {
    CloudProvider {
        provider_id,
        name,
        parent_company,
        marketing_homepage_url,
    }
}

pub const CLOUD_PROVIDERS: &[CloudProvider] = &[
    provider(
        1,
        "Amazon Web Services",
        Some("Amazon.com, Inc."),
        Some("https://aws.amazon.com"),
    ),
    provider(
        2,
        "Google Cloud",
        Some("Alphabet Inc."),
        Some("https://cloud.google.com"),
    ),
    provider(
        3,
        "Microsoft Azure",
        Some("Microsoft Corporation"),
        Some("https://azure.microsoft.com"),
    ),
    provider(
        4,
        "Snowflake",
        Some("Snowflake Inc."),
        Some("https://www.snowflake.com"),
    ),
    provider(
        5,
        "Databricks",
        Some("Databricks, Inc."),
        Some("https://www.databricks.com"),
    ),
    provider(6, "Self-hosted", None, None),
    provider(
        7,
        "ClickHouse Cloud",
        Some("ClickHouse, Inc."),
        Some("https://clickhouse.com"),
    ),
];

const fn engine(
    engine_id: i32,
    provider_id: i32,
    service_name: &'static str,
    engine_type: &'static str,
) -> StorageEngine {
    StorageEngine {
        engine_id,
        provider_id,
        service_name,
        engine_type,
        integration_complete: false,
        test_func_complete: false,
        driver: None,
    }
}

/// An engine Tally connects to through `driver`.
const fn connected(mut e: StorageEngine, driver: &'static str) -> StorageEngine {
    e.driver = Some(driver);
    e.integration_complete = true;
    e.test_func_complete = true;
    e
}

/// The engine with `engine_id`, if any.
pub fn storage_engine(engine_id: i32) -> Option<&'static StorageEngine> {
    STORAGE_ENGINES.iter().find(|e| e.engine_id == engine_id)
}

pub const STORAGE_ENGINES: &[StorageEngine] = &[
    connected(engine(1, 6, "PostgreSQL", "RDBMS"), "postgres"),
    connected(engine(2, 6, "MySQL", "RDBMS"), "mysql"),
    connected(engine(3, 6, "MariaDB", "RDBMS"), "mysql"),
    connected(engine(4, 6, "ClickHouse", "EDW"), "clickhouse"),
    connected(engine(5, 6, "SQLite", "RDBMS"), "sqlite"),
    connected(engine(6, 6, "DuckDB", "EDW"), "duckdb"),
    engine(7, 6, "Microsoft SQL Server", "RDBMS"),
    engine(8, 6, "Oracle Database", "RDBMS"),
    engine(9, 1, "Amazon Redshift", "EDW"),
    engine(10, 1, "Amazon RDS for PostgreSQL", "RDBMS"),
    engine(11, 1, "Amazon Aurora MySQL", "RDBMS"),
    engine(12, 1, "Amazon S3", "OBJ"),
    engine(13, 1, "Amazon Athena", "EDW"),
    engine(14, 1, "Amazon Bedrock", "LLM"),
    engine(15, 2, "BigQuery", "EDW"),
    engine(16, 2, "Cloud SQL for PostgreSQL", "RDBMS"),
    engine(17, 2, "Cloud Storage", "OBJ"),
    engine(18, 2, "Vertex AI", "API_MODEL"),
    engine(19, 3, "Azure Synapse Analytics", "EDW"),
    engine(20, 3, "Azure SQL Database", "RDBMS"),
    engine(21, 3, "Azure Blob Storage", "OBJ"),
    engine(22, 3, "Azure OpenAI", "LLM"),
    engine(23, 4, "Snowflake", "EDW"),
    engine(24, 5, "Databricks SQL", "EDW"),
    engine(25, 7, "ClickHouse Cloud", "EDW"),
];

const fn industry(
    industry_id: i32,
    naisc_code: &'static str,
    industry_name: &'static str,
    short_name: &'static str,
    slug: &'static str,
    description: &'static str,
) -> Industry {
    Industry {
        industry_id,
        industry_name,
        short_name,
        slug,
        naisc_code,
        description,
    }
}

/// The twenty sectors of NAICS 2022, in code order.
pub const INDUSTRIES: &[Industry] = &[
    industry(
        1,
        "11",
        "Agriculture, Forestry, Fishing and Hunting",
        "Agriculture",
        "agriculture",
        "Growing crops, raising animals, harvesting timber, fish and other animals.",
    ),
    industry(
        2,
        "21",
        "Mining, Quarrying, and Oil and Gas Extraction",
        "Mining",
        "mining",
        "Extracting naturally occurring minerals, oil and gas.",
    ),
    industry(
        3,
        "22",
        "Utilities",
        "Utilities",
        "utilities",
        "Electric power, natural gas, steam, water and sewage services.",
    ),
    industry(
        4,
        "23",
        "Construction",
        "Construction",
        "construction",
        "Building, heavy and civil engineering, and specialty trades.",
    ),
    industry(
        5,
        "31-33",
        "Manufacturing",
        "Manufacturing",
        "manufacturing",
        "Transforming materials, substances or components into new products.",
    ),
    industry(
        6,
        "42",
        "Wholesale Trade",
        "Wholesale",
        "wholesale-trade",
        "Selling goods in bulk to other businesses.",
    ),
    industry(
        7,
        "44-45",
        "Retail Trade",
        "Retail",
        "retail-trade",
        "Selling goods to the public, in stores and online.",
    ),
    industry(
        8,
        "48-49",
        "Transportation and Warehousing",
        "Transportation",
        "transportation-warehousing",
        "Moving passengers and cargo, and storing goods.",
    ),
    industry(
        9,
        "51",
        "Information",
        "Information",
        "information",
        "Publishing, broadcasting, telecommunications and data processing.",
    ),
    industry(
        10,
        "52",
        "Finance and Insurance",
        "Finance",
        "finance-insurance",
        "Banking, credit, securities, insurance and funds.",
    ),
    industry(
        11,
        "53",
        "Real Estate and Rental and Leasing",
        "Real Estate",
        "real-estate",
        "Renting, leasing and selling property and equipment.",
    ),
    industry(
        12,
        "54",
        "Professional, Scientific, and Technical Services",
        "Professional Services",
        "professional-services",
        "Legal, accounting, engineering, research, consulting and design.",
    ),
    industry(
        13,
        "55",
        "Management of Companies and Enterprises",
        "Management",
        "management-of-companies",
        "Holding companies and corporate head offices.",
    ),
    industry(
        14,
        "56",
        "Administrative and Support and Waste Management and Remediation Services",
        "Administrative Services",
        "administrative-services",
        "Office administration, staffing, security, cleaning and waste services.",
    ),
    industry(
        15,
        "61",
        "Educational Services",
        "Education",
        "education",
        "Schools, colleges, universities and training centres.",
    ),
    industry(
        16,
        "62",
        "Health Care and Social Assistance",
        "Health Care",
        "health-care",
        "Medical care, hospitals, nursing and social assistance.",
    ),
    industry(
        17,
        "71",
        "Arts, Entertainment, and Recreation",
        "Entertainment",
        "arts-entertainment",
        "Performing arts, spectator sports, museums and recreation.",
    ),
    industry(
        18,
        "72",
        "Accommodation and Food Services",
        "Hospitality",
        "accommodation-food",
        "Lodging, restaurants and other food and drink services.",
    ),
    industry(
        19,
        "81",
        "Other Services (except Public Administration)",
        "Other Services",
        "other-services",
        "Repair, personal care, religious, civic and professional organizations.",
    ),
    industry(
        20,
        "92",
        "Public Administration",
        "Government",
        "public-administration",
        "Government at every level, justice, defence and public order.",
    ),
];

const fn function(function_id: i32, name: &'static str) -> JobFunction {
    JobFunction { function_id, name }
}

pub const JOB_FUNCTIONS: &[JobFunction] = &[
    function(1, "Engineering"),
    function(2, "Data Science"),
    function(3, "Analytics"),
    function(4, "Product Management"),
    function(5, "Marketing"),
    function(6, "Sales"),
    function(7, "Finance"),
    function(8, "Operations"),
    function(9, "Executive Leadership"),
    function(10, "Research"),
    function(11, "Customer Success"),
    function(12, "Legal and Compliance"),
    function(13, "Human Resources"),
];

const fn usecase(
    auc_id: i32,
    auc_name: &'static str,
    slug: &'static str,
    auc_description: &'static str,
) -> AssetUseCase {
    AssetUseCase {
        auc_id,
        auc_name,
        slug,
        auc_description,
    }
}

pub const ASSET_USECASES: &[AssetUseCase] = &[
    usecase(
        1,
        "Market Research",
        "market-research",
        "Size, growth and shape of a market.",
    ),
    usecase(
        2,
        "Competitive Intelligence",
        "competitive-intelligence",
        "How competitors price, sell and perform.",
    ),
    usecase(
        3,
        "Pricing",
        "pricing",
        "Setting and testing prices against demand.",
    ),
    usecase(
        4,
        "Forecasting",
        "forecasting",
        "Projecting demand, revenue or volumes forward.",
    ),
    usecase(
        5,
        "Risk Assessment",
        "risk-assessment",
        "Measuring credit, fraud, supply or market risk.",
    ),
    usecase(
        6,
        "Customer Segmentation",
        "customer-segmentation",
        "Grouping customers by behaviour and value.",
    ),
    usecase(
        7,
        "Benchmarking",
        "benchmarking",
        "Comparing performance against peers.",
    ),
    usecase(
        8,
        "Operational Reporting",
        "operational-reporting",
        "Recurring figures that run a business day to day.",
    ),
    usecase(
        9,
        "Fraud Detection",
        "fraud-detection",
        "Spotting unusual transactions and behaviour.",
    ),
    usecase(
        10,
        "Supply Chain",
        "supply-chain",
        "Inventory, logistics and supplier performance.",
    ),
];

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn unique<T: std::hash::Hash + Eq>(items: impl IntoIterator<Item = T>) -> bool {
        let mut seen = HashSet::new();
        items.into_iter().all(|i| seen.insert(i))
    }

    #[test]
    fn ids_and_names_are_unique_and_engines_name_real_providers() {
        assert!(unique(CLOUD_PROVIDERS.iter().map(|p| p.provider_id)));
        assert!(unique(STORAGE_ENGINES.iter().map(|e| e.engine_id)));
        assert!(unique(INDUSTRIES.iter().map(|i| i.industry_id)));
        assert!(unique(INDUSTRIES.iter().map(|i| i.industry_name)));
        assert!(unique(INDUSTRIES.iter().map(|i| i.slug)));
        assert!(unique(JOB_FUNCTIONS.iter().map(|f| f.name)));
        assert!(unique(PLANS.iter().map(|p| p.plan_id)));
        assert_eq!(default_plan(false).plan_id, "starter");
        assert_eq!(default_plan(true).plan_id, "enterprise");
        assert_eq!(
            plan("professional").map(|p| p.requests_per_minute),
            Some(Some(300))
        );
        assert!(unique(ASSET_USECASES.iter().map(|u| u.auc_name)));
        for e in STORAGE_ENGINES {
            assert!(CLOUD_PROVIDERS
                .iter()
                .any(|p| p.provider_id == e.provider_id));
        }
        assert_eq!(INDUSTRIES.len(), 20, "the twenty NAICS sectors");
    }
}
